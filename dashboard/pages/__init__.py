"""The dashboard's pages; each module's ``page(ctx)`` builds one route's layout."""
