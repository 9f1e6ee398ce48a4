"""The report's views: one module per section, each turning typed results into what its template draws."""
