from twisted.application.service import ServiceMaker

mfocus = ServiceMaker("mfocus", "twisted_mfocus.tap",
                      "A distributed SIP conference focus", "mfocus")
