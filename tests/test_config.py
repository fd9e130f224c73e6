"""Configuration: defaults, file, flags; errors name the key."""

import pytest
from twisted.python import usage

from twisted_mfocus.config import Config, ConfigError
from twisted_mfocus.tap import Options


def test_defaults_are_a_primary_on_loopback_5060():
    c = Config()
    assert c.role == "primary"
    assert c.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert (c.t1, c.t2, c.t4) == (0.5, 4.0, 5.0)


def test_flags_override_the_file(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[focus]\nrole = secondary\nlisten = udp:127.0.0.1:7000\n[sip]\nt1 = 0.25\n")
    opts = Options()
    opts.parseOptions(["--config", str(conf), "--listen", "tcp:127.0.0.1:7001"])
    c = opts["effective"]
    assert c.role == "secondary" and c.t1 == 0.25
    assert c.listen == ["tcp:127.0.0.1:7001"]


def test_example_config_file_is_the_default(shared_dir):
    from .harness import ROOT
    c = Config(f"{ROOT}/etc/mfocus.conf")
    d = Config()
    assert vars(c).keys() == vars(d).keys()
    assert {k: v for k, v in vars(c).items() if k != "_parser"} == \
           {k: v for k, v in vars(d).items() if k != "_parser"}


@pytest.mark.parametrize("text,key", [
    ("[focus]\nrole = tertiary\n", "focus.role"),
    ("[focus]\nlisten = sctp:1.2.3.4:5\n", "focus.listen"),
    ("[sip]\nt1 = fast\n", "sip.t1"),
    ("[sip]\nmax_transactions = -3\n", "sip.max_transactions"),
    ("[focus]\nlisten = tls:127.0.0.1:5061\n", "tls.certificate"),
    ("[focus]\ncapacity = 0\n", "focus.capacity"),
    ("[focus]\nrefer_policy = friends\n", "focus.refer_policy"),
    ("[focus]\nlog_format = xml\n", "focus.log_format"),
    ("[media]\nrtp_ports = 30000\n", "media.rtp_ports"),
    ("[media]\ncodecs = opus, GSM\n", "media.codecs"),
    ("[media]\nsrtp = sometimes\n", "media.srtp"),
    ("[media]\njitter_min = 200\n", "media.jitter_min"),
    ("[media]\nmix_rate = 44100\n", "media.mix_rate"),
    ("[media]\nrtp_ports = 40000-30000\n", "media.rtp_ports"),
    ("[events]\nnotify_interval = -1\n", "events.notify_interval"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config(str(conf))
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--config", str(conf)])


def test_service_flags_override_the_file(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[focus]\ncapacity = 5\nlog_format = text\n[media]\nrtp_ports = 30000-30099\n")
    opts = Options()
    opts.parseOptions(["--config", str(conf), "--capacity", "7", "--rtp-ports", "31000-31009",
                       "--http", "tcp:8080:interface=127.0.0.1", "--log-format", "json"])
    c = opts["effective"]
    assert (c.capacity, c.rtp_ports, c.http, c.log_format) == (
        7, (31000, 31009), "tcp:8080:interface=127.0.0.1", "json")
