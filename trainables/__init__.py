"""One trial. Importing any of it first lends bitsandbytes, wherever it is imported from (peft, transformers,
ours), a torch.compile that waits for a first call: 2.5 s less CPU in every process that imports the trial on
the 2-core CPU, a fresh worker ready 2.3 s sooner on an H100 (trainables/lazy_compile.py, BENCHMARKS.md)."""

from trainables import lazy_compile

lazy_compile.install()
