#!/bin/sh
# Run as root inside a test VM (vm-guest.test.ts) with an ivshmem-doorbell
# device: `famez guest` (the command given as arguments) in each situation
# it must refuse, each answered with one line and exit 2. Each case prints
# "case NAME rc=N" after famez guest's own output; the set-up of each is a
# real kernel state, undone after it.
FAMEZ="$*"
BDF=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ] && [ -e "$d/resource1" ]; then BDF=${d##*/}; fi
done
echo "doorbell device $BDF"

# A kernel whose vfio-pci module cannot be loaded: modprobe looks for
# modules in an empty tree (vfio-pci is not loaded yet in this VM).
MODPROBE_OPTIONS='-d /nonexistent' $FAMEZ --vfio </dev/null; echo "case no-vfio rc=$?"

# No device: the kernel forgets it, then finds it again.
echo 1 > "/sys/bus/pci/devices/$BDF/remove"
$FAMEZ </dev/null; echo "case no-device rc=$?"
echo 1 > /sys/bus/pci/rescan

# Bound to another driver.
modprobe pci-stub ids=1af4:1110
$FAMEZ </dev/null; echo "case bound-elsewhere rc=$?"
echo "$BDF" > /sys/bus/pci/drivers/pci-stub/unbind
rmmod pci-stub

# Not root.
setpriv --reuid=65534 --regid=65534 --clear-groups $FAMEZ </dev/null; echo "case not-root rc=$?"

# In use: another famez guest holds the device.
mkfifo /tmp/hold
$FAMEZ --no-link -N holder </tmp/hold > /tmp/holder.out 2>&1 &
HOLDER=$!
exec 3>/tmp/hold
i=0
while ! grep -q 'attached to' /tmp/holder.out && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
cat /tmp/holder.out
$FAMEZ </dev/null; echo "case in-use rc=$?"
exec 3>&-
wait $HOLDER; echo "holder rc=$?"

# And the polling fallback, asked for: it links up and the switch answers.
printf 'ping switch\n' | $FAMEZ --poll; echo "case poll rc=$?"
