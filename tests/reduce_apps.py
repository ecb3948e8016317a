"""Classes whose ``__reduce__`` callable is not a module-level name (issue 15),
shared by the fidelity tests and the round-trip property test: defined at module
level, as applications define theirs."""


class Rebuilt:
    """The common ``return type(self)._reconstruct, (...)`` pattern."""

    def __init__(self, x):
        self.x = x

    @classmethod
    def _reconstruct(cls, x):
        return cls(x)

    def __reduce__(self):
        return type(self)._reconstruct, (self.x,)


class FromState(Rebuilt):
    """A subclass: the classmethod is bound to the subclass."""


class Factory:
    def __init__(self, scale):
        self.scale = scale

    def make(self, x):
        return Made(x * self.scale, self)


class Made:
    def __init__(self, x, factory):
        self.x = x
        self.factory = factory

    def __reduce__(self):
        return self.factory.make, (self.x // self.factory.scale,)


def pair(a, b):
    return ("pair", a, b)
