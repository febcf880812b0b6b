"""Message templates: Jinja2 in a sandbox that bounds what a template can reach, how
long it can run and how much it can write.

Three fences, each enough for what it guards:
- the sandbox (``ImmutableSandboxedEnvironment``) refuses internals such as
  ``__class__`` and any call that would change a value;
- the template is checked before it is stored: only plain expressions, ``if`` and a
  list of filters that cannot blow text up. No loops, macros, calls, imports or ``*``,
  so rendering time is linear in the template's size;
- the output is cut off at ``MAX_OUTPUT`` characters, with an error, never truncated
  silently.

Jinja's parser and compiler recurse once per level of nesting, so a template nested a
few thousand levels deep (brackets, ``if`` blocks) would exhaust Python's stack. The
tokens are counted first (the lexer does not recurse): more than ``MAX_DEPTH`` levels is
refused before parsing, and a recursion limit reached anyway (``not not not …``) is the
same refusal.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import TemplateInvalid

MAX_OUTPUT = 262_144
MAX_DEPTH = 50
_OPENING = frozenset({"(", "[", "{"})
_CLOSING = frozenset({")", "]", "}"})
# The names a template can use; anything else is a typo, reported at once.
NAMES = frozenset({"coupon", "recipient", "coupon_set", "delivery"})
# Filters that keep the output within a small multiple of their input.
FILTERS = frozenset(
    {
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "striptags",
        "default",
        "d",
        "escape",
        "e",
        "truncate",
        "urlencode",
        "int",
        "float",
        "round",
        "abs",
        "string",
        "length",
        "first",
        "last",
        "date",
    }
)
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.If,
    nodes.CondExpr,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Filter,
    nodes.Test,
    nodes.Keyword,
    nodes.Tuple,
    nodes.List,
)


def _date(value: Any, fmt: str = "%Y-%m-%d") -> str:
    """``{{ coupon_set.valid_until | date('%d %B %Y') }}``; empty for no date."""
    if value is None or value == "":
        return ""
    if len(fmt) > 100:
        raise SecurityError("the date format is too long")
    strftime = getattr(value, "strftime", None)
    return str(strftime(fmt)) if strftime else str(value)


def _environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(autoescape=html, keep_trailing_newline=True)
    env.filters = {name: env.filters[name] for name in FILTERS if name in env.filters}
    env.filters["date"] = _date
    env.globals = {}
    env.tests = {
        name: env.tests[name]
        for name in ("defined", "undefined", "none", "number", "string", "eq", "ne", "lt", "gt")
    }
    return env


_TEXT = _environment(html=False)
_HTML = _environment(html=True)


def _refuse(field: str, node: nodes.Node, what: str) -> TemplateInvalid:
    line = getattr(node, "lineno", None)
    return TemplateInvalid(f"The {field} template, line {line}: {what}.", field=field, line=line)


def _check(field: str, tree: nodes.Template) -> None:
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            kind = type(node).__name__
            raise _refuse(
                field, node, f"'{kind}' is not allowed (only expressions, if and filters)"
            )
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in NAMES:
            raise _refuse(
                field, node, f"unknown name '{node.name}' (use one of {', '.join(sorted(NAMES))})"
            )
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise _refuse(field, node, f"the attribute '{node.attr}' is not accessible")
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise _refuse(field, node, f"the filter '{node.name}' is not allowed")
        if isinstance(node, nodes.Test) and node.name not in _TEXT.tests:
            raise _refuse(field, node, f"the test '{node.name}' is not allowed")


def _check_depth(field: str, env: ImmutableSandboxedEnvironment, source: str) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` from the tokens, before any recursion."""
    brackets = blocks = 0
    after_block_begin = False
    for line, kind, value in env.lex(source):
        if kind == "operator" and value in _OPENING:
            brackets += 1
        elif kind == "operator" and value in _CLOSING:
            brackets -= 1
        elif after_block_begin and kind == "name":
            blocks += value == "if"
            blocks -= value == "endif"
        if kind != "whitespace":
            after_block_begin = kind == "block_begin"
        if max(brackets, blocks) > MAX_DEPTH:
            raise TemplateInvalid(
                f"The {field} template, line {line}: nested more than {MAX_DEPTH} levels deep.",
                field=field,
                line=line,
            )


def _too_deep(field: str) -> TemplateInvalid:
    return TemplateInvalid(
        f"The {field} template is nested too deeply (at most {MAX_DEPTH} levels).",
        field=field,
        line=None,
    )


class Compiled:
    """A delivery's subject and body, checked and compiled once, rendered per message."""

    def __init__(self, *, subject: str | None, body: str | None, html: bool) -> None:
        self._env = _HTML if html else _TEXT
        self._subject = self._compile("subject", subject, env=_TEXT)
        self._body = self._compile("template", body, env=self._env)

    @staticmethod
    def _compile(field: str, source: str | None, *, env: ImmutableSandboxedEnvironment) -> Any:
        if source is None:
            return None
        try:
            _check_depth(field, env, source)
            tree = env.parse(source)
            _check(field, tree)
            return env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateInvalid(
                f"The {field} template, line {exc.lineno}: {exc.message}.",
                field=field,
                line=exc.lineno,
            ) from None
        except RecursionError:
            raise _too_deep(field) from None

    def render(self, context: Mapping[str, Any]) -> tuple[str | None, str | None]:
        return (
            _render("subject", self._subject, context),
            _render("template", self._body, context),
        )


def _render(field: str, template: Any, context: Mapping[str, Any]) -> str | None:
    if template is None:
        return None
    size = 0
    parts: list[str] = []
    try:
        chunks: Iterable[str] = template.generate(context)
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateInvalid(
                    f"The {field} template renders more than {MAX_OUTPUT} characters.",
                    field=field,
                    line=None,
                )
            parts.append(chunk)
    except (SecurityError, UndefinedError, TemplateError, ValueError, TypeError) as exc:
        raise TemplateInvalid(
            f"The {field} template could not be rendered: {exc}.", field=field, line=None
        ) from None
    except RecursionError:
        raise _too_deep(field) from None
    return "".join(parts)
