from tests.app import conftest as app_fixtures

# The in-process API and a fresh tenant's key, as the API tests have them.
api = app_fixtures.api
auth = app_fixtures.auth
