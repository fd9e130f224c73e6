"""Run a command as systemd's ``MemoryDenyWriteExecute=yes`` would:
``python tests/mdwe.py COMMAND ARGS...``.

systemd 252 (the Debian 12 one) installs a seccomp filter that refuses,
with EPERM: ``mmap`` of memory both writable and executable, ``mprotect``
and ``pkey_mprotect`` adding execute permission, ``shmat`` with
``SHM_EXEC`` (src/shared/seccomp-util.c, seccomp_memory_deny_write_execute);
later ones use prctl(PR_SET_MDWE) where the kernel has it, which refuses
the same W+X mappings.  This builds that filter as classic BPF
(seccomp(2)), sets no_new_privs as systemd does, and execs the command:
what fails here fails under the unit.  x86-64 only (``SUPPORTED``).
"""

import ctypes
import errno
import os
import platform
import struct
import sys

SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"

AUDIT_ARCH_X86_64 = 0xC000003E
NR_MMAP, NR_MPROTECT, NR_SHMAT, NR_PKEY_MPROTECT = 9, 10, 30, 329
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
LD_ABS, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06
ARCH, NR, ARG2 = 4, 0, 16 + 8 * 2       # offsets in struct seccomp_data (low word)
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _op(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)


#: jt/jf count the instructions skipped after this one
FILTER = [
    _op(LD_ABS, ARCH), _op(JEQ, AUDIT_ARCH_X86_64, 1, 0), _op(RET, RET_ALLOW),   # 0-2
    _op(LD_ABS, NR),                                                           # 3
    _op(JEQ, NR_MMAP, 4, 0),                # -> 9
    _op(JEQ, NR_MPROTECT, 6, 0),            # -> 12
    _op(JEQ, NR_PKEY_MPROTECT, 5, 0),       # -> 12
    _op(JEQ, NR_SHMAT, 6, 0),               # -> 14
    _op(RET, RET_ALLOW),                    # 8
    _op(LD_ABS, ARG2), _op(AND, PROT_WRITE | PROT_EXEC),                        # 9-10 mmap
    _op(JEQ, PROT_WRITE | PROT_EXEC, 4, 5),                                    # 11
    _op(LD_ABS, ARG2), _op(JSET, PROT_EXEC, 2, 3),                             # 12-13 mprotect
    _op(LD_ABS, ARG2), _op(JSET, SHM_EXEC, 0, 1),                              # 14-15 shmat
    _op(RET, RET_EPERM),                    # 16
    _op(RET, RET_ALLOW),                    # 17
]


def deny_write_execute():
    """Install the filter on this process (and what it execs)."""
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    code = b"".join(FILTER)
    buffer = ctypes.create_string_buffer(code, len(code))
    program = Program(len(FILTER), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot install the seccomp filter")


if __name__ == "__main__":
    deny_write_execute()
    os.execvp(sys.argv[1], sys.argv[1:])
