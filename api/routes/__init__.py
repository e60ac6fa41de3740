"""The API's routers: native, SaaS-seed compatible, Elastic Path compatible, operations."""
