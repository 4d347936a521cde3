from .helpers import triple
