from .sub import double

NAME = "pkg"
