#!/bin/bash
# Wifi for real: boots Debian's kernel (which has mac80211_hwsim) under qemu with a small
# initramfs, runs hostapd (SSID ktricks-home) on radio 0 (BSSID 02:00:00:00:00:00) and
# wpa_supplicant on radio 1, and has `ktricks netwatch` inside the guest report wifi-connect /
# wifi-disconnect on the serial console. Then a second access point with the same SSID starts on
# radio 2 (BSSID 02:00:00:00:02:00), and the station roams there and back (`wpa_cli roam`, ROAMS
# times in all, alternating): netwatch must report each as one wifi-roam with the old and new BSSID,
# never as a disconnect/connect pair.
# Usage: netwatch_wifi_vm.sh KTRICKS_BINARY CACHE_DIR [ROAMS]   (ROAMS: 2 by default)
# Exit: 0 passed, 1 failed, 77 skipped (the kernel package cannot be obtained).
# The guest's console is left in CACHE_DIR/console.txt; bench/netwatch.sh reads the roam timings
# from it, all wall clock: NWROAM (before `wpa_cli roam`), NWEVENT roam (netwatch's script),
# NWWPA (wpa_supplicant's own CTRL-EVENT-CONNECTED, after the 4-way handshake) and `iw event -t`
# (cfg80211's connect event).
set -euo pipefail

KTRICKS=$(realpath "$1")
CACHE=$(realpath -m "$2")
ROAMS=${3:-2}
[[ $ROAMS =~ ^[1-9][0-9]*$ ]] || { echo "netwatch_wifi_vm.sh: ROAMS must be a positive number, not '$ROAMS'"; exit 1; }
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
for applet in sh mount echo cat sleep grep sed seq kill poweroff ip mkdir ls ps; do ln -s busybox "$root/bin/$applet"; done
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
copy_with_libraries "$(command -v wpa_cli)" sbin/wpa_cli
# busybox's date has no %N: coreutils' under its own name (busybox sh would run its applet).
copy_with_libraries "$(command -v date)" bin/nsdate
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
# The 4-way handshake under TCG on a loaded host: hostapd's first EAPOL-Key retry comes after
# 100 ms, the last after ~3 s; more retries, so a slow guest is not deauthenticated mid-handshake.
wpa_pairwise_update_count=10
wpa_group_update_count=10
EOF
# The second access point: same SSID and passphrase, on the third radio (BSSID 02:00:00:00:02:00).
sed -e 's/^interface=wlan0/interface=wlan2/' "$root/etc/hostapd.conf" >"$root/etc/hostapd2.conf"
cat >"$root/etc/wpa.conf" <<'EOF'
ctrl_interface=/var/run/wpa_supplicant
network={
    ssid="ktricks-home"
    psk="ktricks-secret"
    scan_freq=2412
}
EOF
echo "$ROAMS" >"$root/etc/roams"
cat >"$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo /sbin/modprobe > /proc/sys/kernel/modprobe
modprobe mac80211_hwsim radios=3 || echo "NWFAIL modprobe"
ip link set lo up
hostapd -B /etc/hostapd.conf >/tmp/hostapd.log 2>&1 || { echo "NWFAIL hostapd"; cat /tmp/hostapd.log; }
ktricks netwatch --no-initial \
  --on wifi-connect --exec 'echo "NWEVENT connect ssid=$KTRICKS_SSID bssid=$KTRICKS_BSSID freq=$KTRICKS_FREQ iface=$KTRICKS_IFACE"' \
  --on wifi-disconnect --exec 'echo "NWEVENT disconnect ssid=$KTRICKS_SSID bssid=$KTRICKS_BSSID iface=$KTRICKS_IFACE"' \
  --on wifi-roam --exec 'echo "NWEVENT roam ssid=$KTRICKS_SSID bssid=$KTRICKS_BSSID old=$KTRICKS_OLD_BSSID iface=$KTRICKS_IFACE at=$(nsdate +%s.%N)"' \
  --on 'wifi-connect,ssid!=ktricks-home' --exec 'echo "NWEVENT not-home-fired ssid=$KTRICKS_SSID"' \
  --on 'wifi-connect,ssid!=other-*' --exec 'echo "NWEVENT not-other-fired ssid=$KTRICKS_SSID"' \
  > /dev/console 2>&1 &
iw event -t >/dev/console 2>&1 &
sleep 1
# -t -f: its log with wall-clock stamps, for the CTRL-EVENT-CONNECTED times (NWWPA lines at the end).
wpa_supplicant -B -t -f /tmp/wpa.log -i wlan1 -c /etc/wpa.conf -P /run/wpa.pid || echo "NWFAIL wpa_supplicant"
# wait_for BSSID: until the station has completed the handshake with that access point (15 s).
wait_for() {
  for i in $(seq 1 60); do
    wpa_cli -i wlan1 status >/tmp/status 2>/dev/null
    grep -q "^bssid=$1" /tmp/status && grep -q wpa_state=COMPLETED /tmp/status && return 0
    sleep 0.25
  done
  echo "NWRETRY not associated with $1"; cat /tmp/status
  return 1
}
wait_for 02:00:00:00:00:00 || echo "NWFAIL no first connection"
# The second access point only now (had the station known both at first, it would pick either),
# then scans until the station has seen it.
hostapd -B /etc/hostapd2.conf >/tmp/hostapd2.log 2>&1 || { echo "NWFAIL hostapd2"; cat /tmp/hostapd2.log; }
for i in $(seq 1 40); do
  wpa_cli -i wlan1 scan >/dev/null
  sleep 0.5
  wpa_cli -i wlan1 scan_results | grep -q 02:00:00:00:02:00 && break
done
target=02:00:00:00:02:00
# A roam that does not complete (on a loaded host the guest can be too slow for the new AP, and
# the supplicant falls back to the old one) is tried again, up to 3 times; NWROAM marks each try.
for i in $(seq 1 "$(cat /etc/roams)"); do
  for try in 1 2 3; do
    sleep 0.5
    echo "NWROAM $i $target start=$(nsdate +%s.%N)"
    wpa_cli -i wlan1 roam "$target" >/dev/null || echo "NWRETRY wpa_cli roam $target failed"
    wait_for "$target" && break
  done
  grep -q "^bssid=$target" /tmp/status || { echo "NWFAIL roam $i to $target"; break; }
  if [ "$target" = 02:00:00:00:02:00 ]; then target=02:00:00:00:00:00; else target=02:00:00:00:02:00; fi
done
# Past netwatch's roam window, so a held-back disconnect would have been reported by now.
sleep 3
echo "NWROAMS-DONE"
grep CTRL-EVENT-CONNECTED /tmp/wpa.log | sed 's/^/NWWPA /'
kill "$(cat /run/wpa.pid)"
sleep 2
echo "NWDONE"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >initramfs.gz

# --- boot it (KVM does not run a stock kernel on every host: TCG is what works everywhere) -------
accel="tcg,thread=multi"
timeout 200 qemu-system-x86_64 -accel "$accel" -smp 2 -m 1024 -net none -nographic -no-reboot \
    -kernel "kernel/boot/vmlinuz-$version" -initrd initramfs.gz \
    -append "console=ttyS0 quiet panic=-1" >console.log 2>&1 || true
tr -d '\r' <console.log >console.txt

fail=0
check() {
    if grep -q -- "$1" console.txt; then echo "ok: $2"; else echo "FAILED: $2 (no line matching '$1')"; fail=1; fi
}
check "NWEVENT connect ssid=ktricks-home bssid=02:00:00:00:00:00 freq=2412 iface=wlan1" "wifi-connect with SSID, BSSID and frequency"
check "NWEVENT not-other-fired ssid=ktricks-home" "ssid!=other-* fires for ktricks-home"
if grep -q "NWEVENT not-home-fired" console.txt; then echo "FAILED: ssid!=ktricks-home fired"; fail=1; else echo "ok: ssid!=ktricks-home did not fire"; fi
# The roams: each one wifi-roam naming both BSSIDs, in order, and no disconnect or connect between.
there="NWEVENT roam ssid=ktricks-home bssid=02:00:00:00:02:00 old=02:00:00:00:00:00 iface=wlan1"
back="NWEVENT roam ssid=ktricks-home bssid=02:00:00:00:00:00 old=02:00:00:00:02:00 iface=wlan1"
expected=$(for ((i = 1; i <= ROAMS; i++)); do if ((i % 2)); then echo "$there"; else echo "$back"; fi; done)
actual=$(grep -o "NWEVENT roam .*iface=wlan1" console.txt || true)
if [[ $actual == "$expected" ]]; then echo "ok: $ROAMS wifi-roam events, each with the old and new BSSID"
else echo "FAILED: wifi-roam events: expected"; echo "$expected"; echo "got"; echo "$actual"; fail=1; fi
# Between the first `wpa_cli roam` and NWROAMS-DONE (3 s after the last roam, past the roam
# window). Before it, on a loaded machine the first handshake can time out under TCG and the
# station reconnect: a real disconnect/connect pair, rightly reported, and not what is tested here.
roaming=$(sed -n '/^NWROAM 1 /,/NWROAMS-DONE/p' console.txt)
n=$(grep -c "NWEVENT disconnect" <<<"$roaming" || true)
if [[ $n == 0 ]]; then echo "ok: no wifi-disconnect while roaming"; else echo "FAILED: $n wifi-disconnect while roaming"; fail=1; fi
n=$(grep -c "NWEVENT connect" <<<"$roaming" || true)
if [[ $n == 0 ]]; then echo "ok: no wifi-connect while roaming"; else echo "FAILED: $n wifi-connect while roaming"; fail=1; fi
last=02:00:00:00:02:00
((ROAMS % 2)) || last=02:00:00:00:00:00
stopped=$(sed -n '/NWROAMS-DONE/,$p' console.txt)
n=$(grep -c "NWEVENT disconnect ssid=ktricks-home bssid=$last iface=wlan1" <<<"$stopped" || true)
if [[ $n == 1 ]]; then echo "ok: one wifi-disconnect from the last access point when wpa_supplicant stops"
else echo "FAILED: $n wifi-disconnect from $last when wpa_supplicant stopped (expected 1)"; fail=1; fi
if grep -q NWFAIL console.txt; then echo "FAILED: the guest reported: $(grep NWFAIL console.txt | head -3)"; fail=1; fi
check "NWDONE" "guest ran to the end"
if [ $fail -ne 0 ]; then
    echo "--- guest console ---"; grep -v "^$" console.txt | tail -60
fi
exit $fail
