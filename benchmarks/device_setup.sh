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
