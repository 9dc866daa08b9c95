"""One module per command group; each is a thin shell over a library function."""
