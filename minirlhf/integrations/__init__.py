"""Optional bridges from minirlhf to other libraries. The core package never imports them.

* :mod:`minirlhf.integrations.trl`: train on the toy world with TRL's own trainers and read the exact
  attainment in TRL's logs (install the extra: ``pip install -e ".[trl]"``);
* :mod:`minirlhf.integrations.verl`: the toy world's true reward as a verl reward function, for the
  files that ``minirlhf export --format verl`` writes.
"""
