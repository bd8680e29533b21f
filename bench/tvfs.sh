#!/usr/bin/env bash
# bench/tvfs.sh — `ktricks tvfs` next to ffmpegfs (Debian 2.13, --desttype=ts: its closest mode to
# "every file becomes an MPEG-TS the TV plays").
#
#   KTRICKS=path/to/ktricks RUNS=3 bench/tvfs.sh
#   LISTING_ONLY=1 RUNS=7 bench/tvfs.sh     (only the two ls -l rows: quick, for more runs)
#
# Corpus: one 30 s 640x360 VP9+Opus WebM (both tools must transcode it), and 200 hard links of a 4 s
# clip for the listing test. Every run mounts afresh with an empty cache (cold). Measured:
#   ttfb        first 64 KiB of the transcoded file, cold
#   full read   the whole file, cold (and the realtime factor: 30 s / time)
#   seek        64 KiB at 50% of a cold file
#   ls -l 200   listing 200 never-seen files (tvfs probes them; its cache is then warm)
#   ls -l again the same 200 files on a fresh mount over the same cache directory (a warm probe
#               cache: what a restart of the daemon, or a second TV browsing the folder, costs)
# The tools take turns within each run (tvfs, then ffmpegfs), so a change in the machine's load
# hits both; the load average before and after is printed with the table.
#   size error  |st_size from the first stat - bytes read| / bytes read
#   padding     null TS packets + H.264 filler NAL units in the output (bench/ts_padding.py), % of it
#   peak memory VmHWM of the daemon after the full read
#   remux       a 30 s 1280x720 H.264+AAC MKV (tvfs remuxes it to a faststart MP4; ffmpegfs with
#               --desttype=mp4 makes its own MP4): the first stat (tvfs: probe + dry run of the muxer)
#               and then the first 64 KiB, cold (tvfs streams the remux behind its head, issue 19)
#   audio max step the largest difference between consecutive decoded audio samples (ffmpeg's
#               astats "Max difference", first channel) of the output, next to the source's: a
#               click at a segment boundary shows as a step above the source's (issue 19)
# Prints one markdown table of medians over RUNS, and ffmpegfs/tvfs ratios.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-3}
LISTING_ONLY=${LISTING_ONLY:-0}
[[ -x $K ]] || { echo "tvfs.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "tvfs.sh: RUNS must be a positive integer" >&2; exit 1; }
for tool in ffmpeg ffmpegfs fusermount3 awk dd python3; do
    command -v "$tool" >/dev/null || { echo "tvfs.sh: needs $tool" >&2; exit 1; }
done
[[ -w /dev/fuse ]] || { echo "tvfs.sh: needs /dev/fuse" >&2; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-tvfs.XXXXXX")
daemon=
cleanup() {
    for m in "$tmp"/mnt*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m" 2>/dev/null; done
    [[ -n $daemon ]] && kill "$daemon" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

mkdir -p "$tmp/src" "$tmp/many" "$tmp/remux"
if [[ $LISTING_ONLY != 1 ]]; then
    ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=640x360:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -t 30 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 800k -c:a libopus "$tmp/src/movie.webm"
fi
ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=sample_rate=48000 \
    -t 4 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -c:a libopus "$tmp/clip.webm"
ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1280x720:rate=25 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 30 \
    -c:v libx264 -preset ultrafast -b:v 4M -pix_fmt yuv420p -c:a aac -ac 2 "$tmp/remux/movie.mkv"
for i in $(seq -w 1 200); do ln "$tmp/clip.webm" "$tmp/many/clip$i.webm"; done

now() { echo "$EPOCHREALTIME"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

# mount TOOL SRC MNT CACHE [DESTTYPE]: starts the daemon in the foreground, waits for the mount.
mount_tool() {
    local tool=$1 src=$2 mnt=$3 cache=$4 desttype=${5:-ts}
    mkdir -p "$mnt" "$cache"
    if [[ $tool == tvfs ]]; then
        "$K" tvfs "$src" "$mnt" -f --cache "$cache" 2>/dev/null &
    else
        ffmpegfs "$src" "$mnt" -f --desttype="$desttype" --cachepath="$cache" --log_maxlevel=ERROR \
            >/dev/null 2>&1 &
    fi
    daemon=$!
    for _ in $(seq 1 500); do mountpoint -q "$mnt" && return 0; sleep 0.02; done
    echo "tvfs.sh: $tool did not mount" >&2; exit 1
}
unmount_tool() {
    fusermount3 -u "$1"
    wait "$daemon" 2>/dev/null || true
    daemon=
}
target_of() { if [[ $1 == tvfs ]]; then echo movie.ts; else echo movie.webm.ts; fi; }

# max_step FILE: astats' "Max difference" of FILE's first audio track, first channel.
max_step() {
    ffmpeg -nostdin -hide_banner -i "$1" -map 0:a:0 -af astats=measure_overall=none -f null - 2>&1 |
        awk '/Max difference/ { print $NF; exit }'
}

declare -A samples
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
add() { samples[$1,$2]+="$3 "; }

for run in $(seq 1 "$RUNS"); do
    for tool in tvfs ffmpegfs; do
        base=$tmp/$tool-$run
        if [[ $LISTING_ONLY != 1 ]]; then
        # ttfb + full read + size error + memory, one cold mount
        mount_tool "$tool" "$tmp/src" "$tmp/mnt-a" "$base-cache-a"
        file=$tmp/mnt-a/$(target_of "$tool")
        size=$(stat -c %s "$file")
        t0=$(now); dd if="$file" of=/dev/null bs=64k count=1 status=none; t1=$(now)
        add "$tool" ttfb "$(ms "$t0" "$t1")"
        t0=$(now); got=$(cat "$file" | wc -c); t1=$(now)
        add "$tool" full "$(ms "$t0" "$t1")"
        add "$tool" error "$(awk -v s="$size" -v g="$got" 'BEGIN { d = s - g; if (d < 0) d = -d; printf "%.2f", 100 * d / (g ? g : 1) }')"
        add "$tool" padding "$(python3 "$here/ts_padding.py" "$file")"
        add "$tool" memory "$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon/status")"
        add "$tool" step "$(max_step "$file")"
        unmount_tool "$tmp/mnt-a"
        # seek: 64 KiB at 50% of a cold file
        mount_tool "$tool" "$tmp/src" "$tmp/mnt-b" "$base-cache-b"
        file=$tmp/mnt-b/$(target_of "$tool")
        size=$(stat -c %s "$file")
        t0=$(now); dd if="$file" of=/dev/null bs=64k skip=$((size / 2 / 65536)) count=1 status=none; t1=$(now)
        add "$tool" seek "$(ms "$t0" "$t1")"
        unmount_tool "$tmp/mnt-b"
        fi
        # ls -l on 200 never-seen files, then again on a fresh mount over the same cache
        mount_tool "$tool" "$tmp/many" "$tmp/mnt-c" "$base-cache-c"
        t0=$(now); timeout 300 ls -l "$tmp/mnt-c" >/dev/null; t1=$(now)
        add "$tool" ls "$(ms "$t0" "$t1")"
        unmount_tool "$tmp/mnt-c"
        mount_tool "$tool" "$tmp/many" "$tmp/mnt-c" "$base-cache-c"
        t0=$(now); timeout 300 ls -l "$tmp/mnt-c" >/dev/null; t1=$(now)
        add "$tool" ls_warm "$(ms "$t0" "$t1")"
        unmount_tool "$tmp/mnt-c"
        if [[ $LISTING_ONLY != 1 ]]; then
        # remux: the first stat, then the first 64 KiB, of a cold H.264+AAC MKV shown as MP4
        mount_tool "$tool" "$tmp/remux" "$tmp/mnt-d" "$base-cache-d" mp4
        if [[ $tool == tvfs ]]; then file=$tmp/mnt-d/movie.mp4; else file=$tmp/mnt-d/movie.mkv.mp4; fi
        t0=$(now); stat -c %s "$file" >/dev/null; t1=$(now)
        add "$tool" rstat "$(ms "$t0" "$t1")"
        t0=$(now); dd if="$file" of=/dev/null bs=64k count=1 status=none; t1=$(now)
        add "$tool" rttfb "$(ms "$t0" "$t1")"
        unmount_tool "$tmp/mnt-d"
        fi
        rm -rf "$base"-cache-*
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
row() {
    local label=$1 key=$2 unit=$3 a b ratio
    a=$(echo "${samples[tvfs,$key]}" | median)
    b=$(echo "${samples[ffmpegfs,$key]}" | median)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }')
    echo "| $label | $a $unit | $b $unit | $ratio |"
}
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "Corpus: 30 s 640x360 VP9+Opus WebM -> H.264+AAC MPEG-TS; 200 x 4 s WebM for ls;"
echo "30 s 1280x720 H.264+AAC MKV -> MP4 for the remux rows. Medians of $RUNS cold runs."
echo "Load average (1, 5, 15 min) before: $load_before; after: $load_after; CPUs: $(nproc)."
echo
echo "| measure | ktricks tvfs | ffmpegfs 2.13 | ffmpegfs / tvfs |"
echo "|---|---|---|---|"
if [[ $LISTING_ONLY != 1 ]]; then
    full_t=$(echo "${samples[tvfs,full]}" | median)
    full_f=$(echo "${samples[ffmpegfs,full]}" | median)
    row "time to first byte (cold)" ttfb ms
    row "read whole file (cold)" full ms
    factor() { awk -v t="$1" 'BEGIN { printf "%.1fx", 30000 / t }'; }
    echo "| realtime factor (30 s / read time) | $(factor "$full_t") | $(factor "$full_f") | |"
    row "seek: 64 KiB at 50% (cold)" seek ms
fi
row "ls -l, 200 new files" ls ms
row "ls -l, the same 200 files on a new mount (warm probe cache)" ls_warm ms
if [[ $LISTING_ONLY != 1 ]]; then
    row "size error, st_size vs bytes read" error "%"
    row "padding (null packets + filler NAL units)" padding "%"
    row "peak memory (VmHWM)" memory MiB
    row "remux: first stat (cold)" rstat ms
    row "remux: time to first byte (cold, after the stat)" rttfb ms
    row "audio max step (source: $(max_step "$tmp/src/movie.webm"))" step ""
fi
