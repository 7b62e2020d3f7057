// The parts of Debian's hiredis 0.14 that RedisClient uses: the command formatter and the reply reader.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
