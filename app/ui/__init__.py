"""The dashboard served at /ui: static pages that talk to the same REST API with the user's API key."""
