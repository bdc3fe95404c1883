"""One trial. Importing any of it first lends bitsandbytes, wherever it is imported from (peft, transformers,
ours), a torch.compile that waits for a first call: 2.5 s less CPU in every process that imports the trial on
the 2-core CPU (trainables/lazy_compile.py; not measured on a GPU)."""

from trainables import lazy_compile

lazy_compile.install()
