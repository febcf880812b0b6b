"""API models, one module per noun: request bodies (Create / Update, which refuse unknown
fields), what the API answers (Public, pages), and the mappers from tables to answers."""

# transitional re-exports: removed when the packages split on other branches are merged.
# Some table modules re-export schemas at their end; importing the tables first lets a
# schema module that imports its table module's enums be imported first too.
import app.models  # noqa: F401
