-- wrk script: a plain GET (the passthrough path).
dofile(os.getenv("BENCH_LIB"))
