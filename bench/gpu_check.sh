#!/usr/bin/env bash
# The GPU figures of bench/README.md in one prepared run, for a machine with a CUDA GPU (a lent
# one included: about 6 minutes on an H100-class GPU is the aim, 9 at most). Every result lands in $OUT
# (default bench/results/gpu) as the scripts print it, with their stderr beside it.
#
#   OUT=/some/folder bash bench/gpu_check.sh
#   DEVICE=cpu SMOKE=1 bash bench/gpu_check.sh      # a quick dry run of the same steps on the CPU
#
# What a bare machine lacks can be carried in carry/ (bench/README.md says how): pure-Python
# packages in carry/site, the FID Inception file as carry/inception.pt.part-* (the trainer bench
# needs it) and ffmpeg as carry/ffmpeg.xz (the video benches need it); they are put together here.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

[ -d carry/site ] && export PYTHONPATH="$PWD/carry/site${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${ANIMEGAN_INCEPTION:-}" ] && ls carry/inception.pt.part-* >/dev/null 2>&1; then
    cat carry/inception.pt.part-* > carry/inception.pt && export ANIMEGAN_INCEPTION="$PWD/carry/inception.pt"
fi
if ! python -c "import imageio_ffmpeg" 2>/dev/null && [ -z "${IMAGEIO_FFMPEG_EXE:-}" ]; then
    if [ -f carry/ffmpeg.xz ]; then
        xz -dc carry/ffmpeg.xz > carry/ffmpeg && chmod +x carry/ffmpeg && export IMAGEIO_FFMPEG_EXE="$PWD/carry/ffmpeg"
    elif command -v ffmpeg >/dev/null; then
        export IMAGEIO_FFMPEG_EXE="$(command -v ffmpeg)"
    fi
fi

if [ -n "${SMOKE:-}" ]; then
    SIZES="256"; VIDEO="--seconds 0.4 --size 128x96 --repeat 1"; FACES="--batch 8 --steps 4"; TRAIN="--steps 1 --size 128"
else
    SIZES="256 512 1024 1920x1080"; VIDEO="--seconds 4 --size 1920x1080 --batch 8 --repeat 2"
    FACES="--batch 256 --steps 20"; TRAIN="--steps 10"
fi

step() {  # name, time limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name" 2> "$OUT/$name.err"
    echo "$name: exit $? in $((SECONDS - start)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/machine.txt"
# shellcheck disable=SC2086  # the option lists are meant to split
step stylize.json 120 python bench/stylize_bench.py --device "$DEVICE" --sizes $SIZES --variants --compile
step video_full.jsonl 90 python bench/video_bench.py --device "$DEVICE" $VIDEO
# torch.compile with CUDA graphs: the issue's 1080p fp16 figure (its compile time is reported apart)
step video_full_compiled.jsonl 150 python bench/video_bench.py --device "$DEVICE" $VIDEO --compile reduce-overhead
step video_fast_student.jsonl 45 python bench/video_bench.py --device "$DEVICE" $VIDEO --width 0.45
step faces.json 45 python bench/faces_bench.py --device "$DEVICE" $FACES
step train_animegan.json 90 python bench/train_animegan_bench.py --device "$DEVICE" $TRAIN
