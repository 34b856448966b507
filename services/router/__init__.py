"""Router service: decides which model tier answers a request."""
