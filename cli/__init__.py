"""The bbcodec command line."""
