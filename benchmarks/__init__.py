"""`make bench`: the server against its in-process peers on the same weights."""
