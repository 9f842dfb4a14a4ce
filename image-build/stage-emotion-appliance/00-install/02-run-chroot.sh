#!/bin/bash -e
# pi-gen chroot step: everything is in install-appliance.sh so it can be tested alone.
/opt/emotion-appliance/install-appliance.sh
