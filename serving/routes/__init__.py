"""The service's routers, one module per domain; ``serving.main.create_app`` includes them."""
