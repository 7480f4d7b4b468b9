"""The shells: each turns one protocol into the core's events and its commands into that protocol.
``base`` (what the call shells share), ``ari`` (the ARI controller), ``fastagi`` (the dialplan's FastAGI
routes), ``notify`` (outbound notification calls: AMI dials, FastAGI talks), ``twilio`` (to come)."""
