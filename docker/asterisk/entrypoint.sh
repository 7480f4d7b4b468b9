#!/bin/sh
# Renders /etc/asterisk from this container's HOTLINE_* variables (secrets included: they are
# never in the image), then runs Asterisk in the foreground as the asterisk user.
set -eu
/opt/hotline/bin/python -m ivr.cli.asterisk render /etc/asterisk --require-secrets \
    --systemname "${ASTERISK_SYSTEMNAME:-hotline}" \
    --package-conf /usr/share/hotline-asterisk-package-etc
chgrp asterisk /etc/asterisk/*.conf
# Stale runtime files of a container that was killed.
rm -f /var/run/asterisk/asterisk.ctl /var/run/asterisk/asterisk.pid
exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk "$@"
