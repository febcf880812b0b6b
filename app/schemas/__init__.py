"""API models, one module per noun: request bodies (Create / Update, which refuse unknown
fields), what the API answers (Public, pages), and the mappers from tables to answers."""
