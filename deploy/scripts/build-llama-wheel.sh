#!/usr/bin/env bash
# Builds llama-cpp-python for this CPU once and prints the wheel's path.
#
# usage: build-llama-wheel.sh PYTHON VERSION
#
# llama.cpp is compiled with the widest vector extensions this CPU has (AVX-512 with VNNI/VBMI/BF16
# where /proc/cpuinfo lists them, else AVX2), never AMX: a native build uses AMX where the CPU
# advertises it, and that segfaults on the first evaluation on these machines. On this project's
# 2-core AMD EPYC machines the AVX-512 build evaluates prompts about 1.5x faster than the AVX2 one.
# The wheel is kept under NIGHTSHIFT_WHEELS_DIR (default ~/.cache/nightshift/wheels) in a folder
# named after the version and the flags, so a change of flags builds anew; pip's own cache is not
# used, because it would hand back a wheel built with other flags.
set -euo pipefail
python=$1
version=$2
flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
       -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
cpu_has() { grep -qw "$1" /proc/cpuinfo; }
if cpu_has avx512f && cpu_has avx512bw && cpu_has avx512vl && cpu_has avx512dq; then
  flags+=(-DGGML_AVX512=ON)
  cpu_has avx512vbmi && flags+=(-DGGML_AVX512_VBMI=ON)
  cpu_has avx512_vnni && flags+=(-DGGML_AVX512_VNNI=ON)
  cpu_has avx512_bf16 && flags+=(-DGGML_AVX512_BF16=ON)
fi
# ggml's own thread pool, not OpenMP: the agent decodes from worker threads, and with OpenMP each
# calling thread gets its own team whose idle threads spin against the busy one (bench/agent/runtime.py
# --in-thread: 17.5 tokens/s decoding with OpenMP, 25.2 without, on the 0.5B here).
flags+=(-DGGML_OPENMP=OFF)
args="${LLAMA_CMAKE_ARGS:-${flags[*]}}"
key=$(printf '%s %s' "$version" "$args" | sha256sum | cut -c1-12)
dir="${NIGHTSHIFT_WHEELS_DIR:-$HOME/.cache/nightshift/wheels}/llama-cpp-python-$version-$key"
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version for this CPU (about 6 minutes on 2 cores): $args" >&2
  mkdir -p "$dir.partial"
  CMAKE_ARGS="$args" "$python" -m pip wheel --quiet --no-deps --no-cache-dir \
      "llama-cpp-python==$version" -w "$dir.partial" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  printf '%s\n' "$args" > "$dir/CMAKE_ARGS"
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n1)
fi
printf '%s\n' "$wheel"
