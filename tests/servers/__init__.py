"""Real servers on 127.0.0.1 for tests of remote reads: an HTTP(S) range server and an S3 one."""
