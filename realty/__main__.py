from realty.cli import app

app()
