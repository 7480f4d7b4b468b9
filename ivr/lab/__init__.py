"""The lab Asterisk: a real Asterisk from Debian's packages in a cached Debian root (``rootfs``), run
and supervised on loopback as instances (``instance``)."""
