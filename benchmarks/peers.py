"""The peers torpor is measured against, each as save(obj, path) / load(path)."""

import pickle


def pickle_save(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)


def pickle_load(path):
    with open(path, "rb") as f:
        return pickle.load(f)
