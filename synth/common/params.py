"""The one estimator contract of generators, detectors and the EAP scorer (scikit-learn's): every
constructor parameter is stored under its own name and nothing else happens in ``__init__``;
``get_params`` reads the parameters back, ``get_config`` is their JSON form, written into manifests,
checkpoints and score records, and ``param_hints`` is what recipes and ``--set`` are checked against."""

from __future__ import annotations

import inspect
import typing
from typing import Any, ClassVar, Iterator


class Configurable:
    """Mixin: parameters from the constructor's signature, through ``**kwargs`` to the bases' constructors."""

    # parameters that do not decide the output (inputs, devices, batch sizes): left out of get_config
    not_config: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _constructors(cls) -> list[Any]:
        """``__init__`` of the class and of each base it hands ``**kwargs`` on to."""
        out = []
        for base in cls.__mro__:
            if base is object or "__init__" not in vars(base):
                continue
            out.append(base.__init__)
            if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(base.__init__).parameters.values()):
                break
        return out

    @classmethod
    def _parameters(cls) -> Iterator[tuple[Any, str]]:
        """``(constructor, name)`` of every named parameter, the class's own first."""
        for init in cls._constructors():
            for name, parameter in inspect.signature(init).parameters.items():
                if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                    yield init, name

    @classmethod
    def param_hints(cls) -> dict[str, Any]:
        """``{parameter: type hint}``, for checking recipes and ``--set`` options."""
        hints: dict[str, Any] = {}
        for init, name in cls._parameters():
            hints.setdefault(name, typing.get_type_hints(init).get(name, Any))
        return hints

    @classmethod
    def param_names(cls) -> list[str]:
        return list(dict.fromkeys(name for _, name in cls._parameters()))

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments: ``type(self)(**self.get_params())`` is an unfitted copy."""
        return {name: getattr(self, name) for name in self.param_names()}

    def get_config(self) -> dict[str, Any]:
        """The parameters that decide the output (``not_config`` left out)."""
        return {k: v for k, v in self.get_params().items() if k not in self.not_config}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
