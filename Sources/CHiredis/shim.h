// The parts of Debian's hiredis 0.14 that RedisClient uses: the command formatter and the reply reader.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

// hiredis 0.14 allocates an array reply's element table as soon as its header arrives, before
// any element: a reply announcing 500 million elements (a broken or hostile server) would ask
// for 4 GB at once. Longer arrays are refused here; newer hiredis has `maxelements` for this.
#define CHIREDIS_MAX_ARRAY_ELEMENTS (1 << 20)

// One per reader: hiredis's own reply functions with `createArray` checked first.
typedef struct {
    redisReplyObjectFunctions functions;
    const redisReplyObjectFunctions *defaults;
    // Non-zero once an array was refused: the elements it announced. (hiredis itself refuses
    // counts below -1 or past INT_MAX.)
    long long refusedElements;
} chiredis_reader_guard;

static void *chiredis_create_array(const redisReadTask *task, int elements) {
    chiredis_reader_guard *guard = (chiredis_reader_guard *)task->privdata;
    if (elements < 0 || elements > CHIREDIS_MAX_ARRAY_ELEMENTS) {
        guard->refusedElements = elements;
        return NULL;  // hiredis reports "out of memory"; the reader's caller looks here first
    }
    return guard->defaults->createArray(task, elements);
}

// A reader whose replies go through `guard` (which must outlive it; hiredis hands the reader's
// privdata to every read task).
static inline redisReader *chiredis_reader_create(chiredis_reader_guard *guard) {
    redisReader *reader = redisReaderCreate();
    if (reader == NULL) return NULL;
    guard->defaults = reader->fn;
    guard->functions = *reader->fn;
    guard->functions.createArray = chiredis_create_array;
    guard->refusedElements = 0;
    reader->fn = &guard->functions;
    reader->privdata = guard;
    return reader;
}
