#!/bin/bash
# Wifi for real: boots Debian's kernel (which has mac80211_hwsim) under qemu with a small
# initramfs, runs hostapd (SSID ktricks-home) on one simulated radio and wpa_supplicant on the
# other, and has `ktricks netwatch` inside the guest report wifi-connect / wifi-disconnect on the
# serial console. Usage: netwatch_wifi_vm.sh KTRICKS_BINARY CACHE_DIR
# Exit: 0 passed, 1 failed, 77 skipped (the kernel package cannot be obtained).
set -euo pipefail

KTRICKS=$1
CACHE=$2
mkdir -p "$CACHE"
cd "$CACHE"

# --- the kernel: whatever linux-image-amd64 depends on, unpacked here, never installed ----------
package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$package" ]; then echo "SKIP: apt-cache knows no linux-image-amd64"; exit 77; fi
version=${package#linux-image-}
if [ ! -f "kernel/boot/vmlinuz-$version" ]; then
    rm -rf kernel ./*.deb
    if ! apt-get download "$package" >download.log 2>&1; then
        echo "SKIP: apt-get download $package failed:"; tail -3 download.log; exit 77
    fi
    dpkg -x ./"$package"_*.deb kernel
    rm -f ./*.deb
    # Debian does not ship modules.dep; modprobe needs it (the kernel itself modprobes ccm/ctr for WPA2).
    depmod -b kernel "$version"
fi

# --- the initramfs (rebuilt each run: it carries the freshly built ktricks) ----------------------
root=$(mktemp -d "$CACHE/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/run,lib/firmware,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount echo cat sleep grep kill poweroff ip mkdir ls ps; do ln -s busybox "$root/bin/$applet"; done
copy_with_libraries() {
    local program=$1 target=$2
    cp "$program" "$root/$target"
    # The initramfs is unpacked into the guest's RAM: without symbols ktricks and its libraries
    # (FFmpeg's among them, linked for tvfs) are a fraction of the size.
    strip --strip-all "$root/$target" 2>/dev/null || true
    ldd "$program" | grep -o '/[^ ]*' | while read -r library; do
        mkdir -p "$root/$(dirname "$library")"
        if [ ! -e "$root/$library" ]; then
            cp -L "$library" "$root/$library"
            strip --strip-unneeded "$root/$library" 2>/dev/null || true
        fi
    done
}
copy_with_libraries "$KTRICKS" bin/ktricks
copy_with_libraries "$(command -v hostapd)" sbin/hostapd
copy_with_libraries "$(command -v wpa_supplicant)" sbin/wpa_supplicant
copy_with_libraries "$(command -v iw)" sbin/iw
copy_with_libraries "$(command -v kmod)" sbin/kmod
for tool in modprobe insmod depmod; do ln -s kmod "$root/sbin/$tool"; done
cp /lib/firmware/regulatory.db /lib/firmware/regulatory.db.p7s "$root/lib/firmware/"
modules="$root/lib/modules/$version"
mkdir -p "$modules"
cp kernel/lib/modules/"$version"/modules.* "$modules/"
for module in $(for name in mac80211_hwsim ccm ctr gcm cmac; do
                    modprobe -S "$version" -d "$CACHE/kernel" --show-depends "$name" 2>/dev/null; done |
                awk '/^insmod/ {print $2}' | sort -u); do
    relative=${module#"$CACHE/kernel"}
    mkdir -p "$root/$(dirname "$relative")"
    cp "$module" "$root/$relative"
done

cat >"$root/etc/hostapd.conf" <<'EOF'
interface=wlan0
driver=nl80211
ssid=ktricks-home
hw_mode=g
channel=1
wpa=2
wpa_key_mgmt=WPA-PSK
rsn_pairwise=CCMP
wpa_passphrase=ktricks-secret
EOF
cat >"$root/etc/wpa.conf" <<'EOF'
ctrl_interface=/var/run/wpa_supplicant
network={
    ssid="ktricks-home"
    psk="ktricks-secret"
    scan_freq=2412
}
EOF
cat >"$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo /sbin/modprobe > /proc/sys/kernel/modprobe
modprobe mac80211_hwsim radios=2 || echo "NWFAIL modprobe"
ip link set lo up
hostapd -B /etc/hostapd.conf >/tmp/hostapd.log 2>&1 || { echo "NWFAIL hostapd"; cat /tmp/hostapd.log; }
ktricks netwatch --no-initial \
  --on wifi-connect --exec 'echo "NWEVENT connect ssid=$KTRICKS_SSID bssid=$KTRICKS_BSSID freq=$KTRICKS_FREQ iface=$KTRICKS_IFACE"' \
  --on wifi-disconnect --exec 'echo "NWEVENT disconnect ssid=$KTRICKS_SSID bssid=$KTRICKS_BSSID iface=$KTRICKS_IFACE"' \
  --on 'wifi-connect,ssid!=ktricks-home' --exec 'echo "NWEVENT not-home-fired ssid=$KTRICKS_SSID"' \
  --on 'wifi-connect,ssid!=other-*' --exec 'echo "NWEVENT not-other-fired ssid=$KTRICKS_SSID"' \
  > /dev/console 2>&1 &
sleep 1
wpa_supplicant -B -i wlan1 -c /etc/wpa.conf -P /run/wpa.pid >/tmp/wpa.log 2>&1 || echo "NWFAIL wpa_supplicant"
for i in $(seq 1 60); do
  grep -q "wpa_state=COMPLETED" /tmp/wpa.log 2>/dev/null && break
  iw dev wlan1 link 2>/dev/null | grep -q Connected && break
  sleep 0.25
done
sleep 2
kill "$(cat /run/wpa.pid)"
sleep 2
echo "NWDONE"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >initramfs.gz

# --- boot it (KVM does not run a stock kernel on every host: TCG is what works everywhere) -------
accel="tcg,thread=multi"
timeout 100 qemu-system-x86_64 -accel "$accel" -smp 2 -m 1024 -net none -nographic -no-reboot \
    -kernel "kernel/boot/vmlinuz-$version" -initrd initramfs.gz \
    -append "console=ttyS0 quiet panic=-1" >console.log 2>&1 || true
tr -d '\r' <console.log >console.txt

fail=0
check() {
    if grep -q -- "$1" console.txt; then echo "ok: $2"; else echo "FAILED: $2 (no line matching '$1')"; fail=1; fi
}
check "NWEVENT connect ssid=ktricks-home bssid=02:00:00:00:00:00 freq=2412 iface=wlan1" "wifi-connect with SSID, BSSID and frequency"
check "NWEVENT disconnect ssid=ktricks-home bssid=02:00:00:00:00:00 iface=wlan1" "wifi-disconnect"
check "NWEVENT not-other-fired ssid=ktricks-home" "ssid!=other-* fires for ktricks-home"
if grep -q "NWEVENT not-home-fired" console.txt; then echo "FAILED: ssid!=ktricks-home fired"; fail=1; else echo "ok: ssid!=ktricks-home did not fire"; fi
check "NWDONE" "guest ran to the end"
if [ $fail -ne 0 ]; then
    echo "--- guest console ---"; grep -v "^$" console.txt | tail -40
fi
exit $fail
