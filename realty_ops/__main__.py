from realty_ops.cli import app

app()
