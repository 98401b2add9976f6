"""The exercise notebooks (``NN_name.ipynb`` here) stop at their TODOs on purpose, so nbval must
not run them: it runs their solutions in ``solutions/`` instead. ``tests/test_exercises.py``
checks that the exercises fail only at the TODOs."""

collect_ignore_glob = ["[0-9]*.ipynb"]
