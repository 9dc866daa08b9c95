"""`dppp eval`: Re-ID evaluation, its metrics and its pictures."""
