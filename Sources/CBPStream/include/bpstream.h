/*
 * bpstream.h — the C ABI of bpstream: a bounded, backpressured, thread-safe stream.
 *
 * One header, one prefix (bps_), one opaque handle (bps_stream). Every function
 * returns a bps_status (or a plain value that cannot fail); results travel through
 * out-parameters that are written only when the call returns BPS_OK, unless the
 * function's line says otherwise.
 *
 * ===========================================================================
 * OWNERSHIP CONTRACT (read this once; each function repeats it in one line)
 * ===========================================================================
 * Items are opaque, non-NULL pointers (void *). The stream never looks inside one.
 *
 *  - A put that returns BPS_OK moves the item INTO the stream.
 *  - A put that returns any other status leaves the item with the CALLER. This
 *    includes BPS_SHED (drop_newest: the put was accepted and counted, but the
 *    incoming item was shed instead of stored; the caller still owns it and
 *    releases it as it sees fit).
 *  - A get that returns BPS_OK moves the item OUT of the stream to the caller.
 *  - Items the stream drops on its own — evicted by drop_oldest, cleared by
 *    drop_all, discarded by an immediate close, or still inside when the last
 *    reference to the stream is released — are handed to the stream's release
 *    callback (bps_config.release), exactly once each.
 *
 * WHEN AND WHERE RELEASE CALLBACKS RUN
 *  - Never while the stream's lock is held: the stream first moves the dropped
 *    items out under its lock, unlocks, and only then calls release() for each.
 *    So release() may take other locks (for example a language runtime's global
 *    interpreter lock) and may even call back into this stream.
 *  - On the thread whose call dropped them: the putter (drop_oldest, drop_all),
 *    the closer (bps_stream_close with BPS_CLOSE_IMMEDIATE), or the thread that
 *    drops the last reference (bps_stream_release). Evictions are released
 *    before the put returns, after any BPS_WAIT_END hook has run.
 *
 * THREADS
 *  - Every function may be called from any thread, concurrently, on the same
 *    stream, as long as the caller holds a reference (create or retain).
 *  - fork(): every stream's lock is taken around the fork (pthread_atfork), so a
 *    child never inherits one held by a thread it does not have. In the child each
 *    stream holds the items it held at the fork and works as usual; the parent's
 *    threads (and their waits) are gone. A reader's thread is one of them: in a
 *    child, bps_reader_stop joins nothing (see Readers). Closing streams whose
 *    producers stayed in the parent is the child's business.
 *  - The stream never calls caller code while holding its lock, with ONE
 *    documented exception: bps_stream_visit (a garbage collector's traversal).
 *
 * BLOCKING AND WAIT HOOKS
 *  - Blocking calls take a timeout in nanoseconds: < 0 waits without limit,
 *    0 never waits, > 0 waits at most that long (CLOCK_MONOTONIC).
 *  - A blocking call first tries without waiting. Only when it must wait does it
 *    call the optional bps_waiter hook, once per wait episode (a batch put may have
 *    several): BPS_WAIT_BEGIN before waiting, BPS_WAIT_POLL every poll_interval_ns
 *    while waiting (a nonzero return cancels the call with BPS_CANCELLED and changes
 *    nothing), and BPS_WAIT_END after the wait, before the call goes on or returns.
 *    Whoever the call woke (a peer it made room or an item for) is signalled first. Hooks run on the calling
 *    thread without the stream's lock. A language binding uses BEGIN/END to let
 *    go of and take back its runtime lock, and POLL to notice signals (Ctrl-C).
 * ===========================================================================
 */
#ifndef BPSTREAM_H
#define BPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes; compare with bps_abi_version(). */
#define BPS_ABI_VERSION 3  /* 2: readiness watches, try_put, async wait accounting, reader config;
                              3: flow control, clocks, rate controllers, tickets, limiter */

/* The stream. Opaque: only pointers to it exist, made by bps_stream_create. */
typedef struct bps_stream bps_stream;

/* Capacity meaning "no bound": the buffer grows on demand (queue.Queue(maxsize=0)). */
#define BPS_CAPACITY_UNBOUNDED ((int64_t)-1)
/* The largest bounded capacity accepted (2^30 items). */
#define BPS_CAPACITY_MAX ((int64_t)1 << 30)

/* Every call's outcome. bps_status_string() names each one. */
typedef enum bps_status {
    BPS_OK = 0,               /* done */
    BPS_SHED = 1,             /* put accepted but the item was shed (drop_newest; drop_oldest and
                                 drop_all when every item is reserved); caller keeps it */
    BPS_FULL = 2,             /* no room: reject policy, or a block put's timeout passed */
    BPS_EMPTY = 3,            /* nothing to get before the timeout passed */
    BPS_CLOSED = 4,           /* put: the stream is closed. get: closed and drained */
    BPS_CANCELLED = 5,        /* a wait hook's POLL returned nonzero; nothing changed */
    BPS_TIMED_OUT = 6,        /* join: tasks remained unfinished when the timeout passed */
    BPS_INVALID_ARGUMENT = 7, /* NULL handle or out-parameter, NULL item, bad number or enum */
    BPS_INVALID_STATE = 8,    /* task_done called more times than items were put */
    BPS_NO_MEMORY = 9,        /* allocation failed (put: the stream's buffer could not grow);
                                 nothing changed, a put's item stays with the caller */
    BPS_FAILED = 10,          /* get: closed WITH a producer's error and drained (bps_stream_failure) */
    BPS_OS_ERROR = 11         /* an OS call failed; errno tells which */
} bps_status;

/* What a full stream does with the next put. Chosen at creation, never implicit. */
typedef enum bps_policy {
    BPS_POLICY_BLOCK = 0,       /* the putter waits for room (until its timeout: BPS_FULL) */
    BPS_POLICY_DROP_OLDEST = 1, /* the oldest item is evicted (released), the new one stored */
    BPS_POLICY_DROP_NEWEST = 2, /* the new item is shed (BPS_SHED), the backlog keeps its order */
    BPS_POLICY_REJECT = 3,      /* the put fails at once with BPS_FULL */
    BPS_POLICY_DROP_ALL = 4,    /* the whole backlog is cleared (released), the new item stored */
    BPS_POLICY_ADAPTIVE = 5     /* block, paced by an AIMD rate the stream drives itself: see
                                   "Flow control" (bps_config.rate, or AIMD(1000, increase 100,
                                   window 0.1 s) when NULL) */
} bps_policy;

/* Releases one item the stream dropped on its own. Called without the stream's lock. */
typedef void (*bps_release_fn)(void *item, void *context);

/* Creation parameters. Set size = sizeof(bps_config) so the struct can grow. */
typedef struct bps_config {
    size_t size;              /* sizeof(bps_config) */
    int64_t capacity;         /* 1 ... BPS_CAPACITY_MAX, or BPS_CAPACITY_UNBOUNDED */
    bps_policy policy;
    bps_release_fn release;   /* may be NULL: dropped items are then simply forgotten */
    void *release_context;    /* passed to release() as is */
    /* Flow control (see "Flow control" near the end). size == offsetof(bps_config, flow)
     * (an older caller) means: flow 0, rate NULL, clock NULL. */
    uint32_t flow;            /* 1: puts that may wait are gated by the marks below; 0: the
                                 states are classified with the default marks, only reported */
    double throttle_at;       /* flow 1: 0 < throttle_at <= pause_at (default 0.70) */
    double pause_at;          /* flow 1: throttle_at <= pause_at <= 1 (default 0.90) */
    double min_delay;         /* flow 1: seconds, >= 0 (default 0) */
    double max_delay;         /* flow 1: seconds, min_delay ... 86400 (default 0.5) */
    double hysteresis;        /* flow 1: 0 <= h < 1 (default 0) */
    struct bps_rate *rate;    /* NULL, or a rate controller pacing every put (borrowed for the
                                 call: the stream keeps the controller alive itself) */
    struct bps_clock *clock;  /* NULL (CLOCK_MONOTONIC), or a manual clock: time_paused's base */
} bps_config;

typedef enum bps_wait_event {
    BPS_WAIT_BEGIN = 0,  /* about to wait for the first time in this call */
    BPS_WAIT_POLL = 1,   /* still waiting; return nonzero to cancel the call */
    BPS_WAIT_END = 2     /* done waiting; the call returns next (after releasing evictions) */
} bps_wait_event;

/* Called on the waiting thread without the stream's lock. Only POLL's result is read. */
typedef int (*bps_wait_hook)(void *context, bps_wait_event event);

/* Optional hooks for one blocking call (may be NULL). Set size = sizeof(bps_waiter). */
typedef struct bps_waiter {
    size_t size;               /* sizeof(bps_waiter) */
    int64_t poll_interval_ns;  /* > 0: call POLL this often while waiting; <= 0: never */
    bps_wait_hook hook;        /* may be NULL */
    void *context;
} bps_waiter;

/* An atomic snapshot: produced == consumed + dropped + depth holds in every one. */
typedef struct bps_stats {
    size_t size;                   /* caller sets sizeof(bps_stats) before the call */
    uint64_t produced;             /* items handed over by a successful put, shed ones included */
    uint64_t consumed;             /* items taken out by get */
    uint64_t dropped;              /* sum of the four dropped_* reasons below */
    uint64_t dropped_shed;         /* shed on arrival (drop_newest) */
    uint64_t dropped_evicted;      /* evicted from the front (drop_oldest) */
    uint64_t dropped_cleared;      /* cleared with the backlog (drop_all) */
    uint64_t dropped_on_close;     /* discarded by an immediate close */
    uint64_t rejected;             /* puts that failed: reject policy, timeout, non-blocking */
    uint64_t depth;                /* items in the stream now (buffered + reserved) */
    uint64_t peak_depth;           /* the most items ever buffered at once */
    int64_t capacity;              /* current capacity, or BPS_CAPACITY_UNBOUNDED */
    uint64_t backpressure_events;  /* puts that waited + items shed or evicted + backlog clears */
    uint64_t producer_waits;       /* puts that had to wait */
    uint64_t consumer_waits;       /* gets that had to wait */
    uint64_t producer_wait_ns;     /* total time producers spent waiting */
    uint64_t consumer_wait_ns;     /* total time consumers spent waiting */
    uint64_t unfinished_tasks;     /* items put and not yet marked done (task_done) */
    double produced_per_second;    /* over the recent window below */
    double consumed_per_second;    /* over the recent window below */
    double window_seconds;         /* the span the two rates above cover (about 1 s) */
    uint8_t closed;                /* 1 once closed */
    /* Flow control. size == offsetof(bps_stats, flow_state) gets the fields above only. */
    uint32_t flow_state;           /* a bps_flow_state */
    uint64_t throttle_events;      /* transitions NORMAL -> THROTTLED */
    uint64_t pause_events;         /* transitions from NORMAL/THROTTLED to PAUSED/DROPPING */
    uint64_t time_paused_ns;       /* total time in PAUSED or DROPPING, the current spell included */
    double throttle_delay;         /* seconds a put that may wait is delayed now (0 outside THROTTLED) */
    double rate_limit;             /* the rate controller's limit, items/s; < 0 without one */
    double recent_drop_rate;       /* dropped / produced over the recent window (0: none produced) */
} bps_stats;

/* ---------------------------------------------------------------------------
 * Byte frames: the item native producers put.
 * A frame item is a pointer to a bps_frame with its lowest bit set, so a stream can
 * carry frames and a binding's own items (whose pointers are at least 2-aligned) at
 * once; the consumer tells them apart with bps_item_is_frame(). The stream owns a frame
 * like any item; whoever ends up owning it frees it with bps_frame_free(). A release
 * callback of a stream that may hold frames must free them (bps_item_is_frame first).
 * --------------------------------------------------------------------------- */
typedef struct bps_frame {
    size_t length;          /* bytes in data */
    unsigned char data[];   /* the payload */
} bps_frame;

#define BPS_ITEM_FRAME_TAG ((uintptr_t)1)

/* 1 if item is a frame item (made by bps_frame_new / bps_stream_put_frame / a reader). */
static inline int bps_item_is_frame(const void *item) {
    return ((uintptr_t)item & BPS_ITEM_FRAME_TAG) != 0;
}

/* The frame behind a frame item (borrowed: valid until bps_frame_free). */
static inline const bps_frame *bps_item_frame(const void *item) {
    return (const bps_frame *)((uintptr_t)item & ~BPS_ITEM_FRAME_TAG);
}

/* Copies data[0..length) into a new frame item, which *out_item gets; the caller owns it
 * (put it, or free it with bps_frame_free). data stays the caller's. */
bps_status bps_frame_new(const void *data, size_t length, void **out_item);

/* Frees a frame item (NULL or a non-frame item: nothing happens). Cannot fail. */
void bps_frame_free(void *item);

/* Frees every frame item among items[0..count) (NULLs and non-frame items are skipped),
 * like bps_frame_free on each, but cheaper for a consumer freeing a batch: frames put
 * together are freed together. Cannot fail. */
void bps_frames_free(void *const *items, size_t count);

/* Frames of at most this many bytes put in one call (bps_stream_put_frames, a reader's
 * read) share one allocation, freed with the last of them; larger frames have their own.
 * So a consumer that frees small frames in batches holds at most that batch's share. */
#define BPS_FRAME_SHARED_MAX 256

/* Puts a copy of data[0..length) as a frame item, like bps_stream_put. data is always the
 * caller's; the copy is the stream's on BPS_OK and is freed here on any other status.
 * Never needs a language runtime's lock: meant for native producer threads. */
bps_status bps_stream_put_frame(bps_stream *stream, const void *data, size_t length,
                                int64_t timeout_ns, const bps_waiter *waiter);

/* One byte range, for bps_stream_put_frames. */
typedef struct bps_bytes {
    const void *data;
    size_t length;
} bps_bytes;

/* Puts a copy of each frames[i] as one frame item, in order, one stream lock per call
 * (bps_stream_put_many semantics: *out_taken, when non-NULL, is written whatever the
 * status; copies not taken are freed here). The caller's buffers stay the caller's. */
bps_status bps_stream_put_frames(bps_stream *stream, const bps_bytes *frames, size_t count,
                                 int64_t timeout_ns, const bps_waiter *waiter,
                                 size_t *out_taken);

/* Close flags. */
#define BPS_CLOSE_IMMEDIATE 1u  /* also discard (release) the backlog; wake every waiter */

/* Returns BPS_ABI_VERSION of the library actually loaded. Cannot fail. */
uint32_t bps_abi_version(void);

/* Returns a static, human-readable name for any value, known or not. Never NULL. */
const char *bps_status_string(bps_status status);

/* Creates a stream; *out_stream gets a reference the caller owns (release it). */
bps_status bps_stream_create(const bps_config *config, bps_stream **out_stream);

/* Adds a reference to the stream. Ownership of items: unchanged. */
bps_status bps_stream_retain(bps_stream *stream);

/* Drops a reference; the last one releases leftover items (release()) and frees the stream. */
bps_status bps_stream_release(bps_stream *stream);

/* Puts one item. BPS_OK: the stream owns it. Any other status: the caller still does.
 * BPS_NO_MEMORY: the stream's buffer (which grows on demand up to the capacity) could
 * not grow; nothing was stored or counted, and the stream stays usable (gets make room). */
bps_status bps_stream_put(bps_stream *stream, void *item, int64_t timeout_ns,
                          const bps_waiter *waiter);

/* Puts items[0..count) in order; the first *out_taken are the stream's, the rest the
 * caller's. *out_taken is written whatever the status (when out_taken is non-NULL).
 * BPS_OK: all taken. BPS_SHED: the rest were shed (drop_newest). BPS_FULL/BPS_CLOSED/
 * BPS_CANCELLED/BPS_NO_MEMORY (the buffer could not grow: see bps_stream_put): the rest
 * were not put. One timeout covers the whole call. */
bps_status bps_stream_put_many(bps_stream *stream, void *const *items, size_t count,
                               int64_t timeout_ns, const bps_waiter *waiter,
                               size_t *out_taken);

/* Gets the oldest item. BPS_OK: *out_item is the caller's. Otherwise nothing moves. */
bps_status bps_stream_get(bps_stream *stream, int64_t timeout_ns, const bps_waiter *waiter,
                          void **out_item);

/* Waits (up to the timeout) for at least one item, then takes up to max_items in order
 * into out_items. BPS_OK: *out_count >= 1 items are the caller's. Otherwise none moved. */
bps_status bps_stream_get_many(bps_stream *stream, void **out_items, size_t max_items,
                               int64_t timeout_ns, const bps_waiter *waiter,
                               size_t *out_count);

/* Like bps_stream_get_many, but the items are RESERVED: they move to the caller, yet stay
 * counted in the stream's depth (and hold their room against the capacity) until
 * bps_stream_settle reports them. A consumer that delivers items one by one (a language
 * binding's iterator) takes a batch in one call without the stream ever holding more
 * than its capacity, and can hand back what it did not deliver.
 * Reserved items are out of reach of drop_oldest and drop_all, which evict or clear only
 * buffered items (with everything reserved, they shed the new item): a consumer that must
 * stay invisible to those policies does not reserve on such streams (the Python binding
 * reads them item by item). On every policy a put decides on the exact depth: delivered
 * marks (bps_stream_mark_delivered) are absorbed first whenever they could change its
 * outcome or the peak depth, so a put never waits, sheds or rejects while there is room. */
bps_status bps_stream_reserve(bps_stream *stream, void **out_items, size_t max_items,
                              int64_t timeout_ns, const bps_waiter *waiter, size_t *out_count);

/* Settles reserved items: `delivered` of them were consumed (counted as consumed now);
 * returned[0..returned_count) were not and go back to the FRONT of the stream, oldest
 * first, as if never taken (moved INTO the stream; after an immediate close they are
 * released instead, counted as dropped on close). Frees their room; wakes putters. */
bps_status bps_stream_settle(bps_stream *stream, size_t delivered, void *const *returned,
                             size_t returned_count);

/* Reports that `count` reserved items were delivered, WITHOUT taking the stream's lock
 * (an atomic add: call it per item). From then on they count as consumed and their room
 * is free for any put (puts, stats and depth absorb these marks under the lock); a later
 * bps_stream_settle needs to report only items not marked. Nothing is signalled: a put
 * already waiting finds the room at its next recheck (100 us, backing off to 1 ms while
 * it finds none), or sooner: when this consumer waits for an item, or settles or
 * reserves while the stream holds too little to keep it busy until that recheck.
 * Items: unchanged. */
bps_status bps_stream_mark_delivered(bps_stream *stream, size_t count);

/* *out_counter gets the address of the word bps_stream_mark_delivered adds to, so a C
 * consumer can mark inline, without a call per item:
 *     __atomic_fetch_add((intptr_t *)counter, 1, __ATOMIC_RELEASE);
 *     if (__atomic_load_n((intptr_t *)counter + 1, __ATOMIC_RELAXED))
 *         bps_stream_settle(stream, 0, NULL, 0);
 * The word after it is nonzero while a watch waits for room (bps_watch_arm with
 * BPS_WRITABLE): marks are then settled at once, so the room reaches that waiter
 * (bps_stream_mark_delivered does this itself). Valid while the caller holds a reference
 * to the stream. Items: unchanged. */
bps_status bps_stream_delivery_counter(bps_stream *stream, void **out_counter);

/* ---------------------------------------------------------------------------
 * Readiness watches: waiting without a thread (an event loop, an async runtime).
 *
 * A watch is a one-shot, re-armed notification:
 *  1. try the non-blocking call (timeout 0); it returned BPS_EMPTY / BPS_FULL;
 *  2. bps_watch_arm(watch, BPS_READABLE or BPS_WRITABLE, &ready): if that already holds,
 *     *ready says so and nothing is armed (go to 1); else *ready is 0 and the watch is armed;
 *  3. the first transition that makes an armed readiness true disarms the watch and calls
 *     notify(context, events) once, OUTSIDE the stream's lock, on the thread that made the
 *     transition: any thread, possibly a native producer holding no runtime lock. So notify
 *     must only pass the news on (an eventfd write, a flag) and never block;
 *  4. the waiter retries the non-blocking call (1): it is woken, never handed an item, so
 *     a waiter cancelled after its wake-up takes nothing and the next retry gets the item.
 * readable: an item to get, or closed. writable: room for a put, or closed. A close
 * notifies every watch armed for readable or writable with what it waits for plus
 * BPS_WATCH_CLOSED. tasks_done: no unfinished tasks (bps_stream_join would not wait),
 * closed or not; a close never fires it by itself (only its discards may finish tasks).
 * A stream with no armed watch pays one integer test per transition.
 * ------------------------------------------------------------------------- */
#define BPS_READABLE 1u
#define BPS_WRITABLE 2u
#define BPS_WATCH_CLOSED 4u
#define BPS_TASKS_DONE 8u   /* an async join: unfinished tasks reached 0 */

typedef struct bps_watch bps_watch;
typedef void (*bps_notify_fn)(void *context, uint32_t events);
typedef void (*bps_context_release_fn)(void *context);

/* Registers a watch (not armed). context is the caller's until the watch is released
 * AND no notify is running: then release_context(context) is called once (may be NULL),
 * on whichever thread finishes last. The watch holds a reference to the stream. */
bps_status bps_stream_watch(bps_stream *stream, bps_notify_fn notify,
                            bps_context_release_fn release_context, void *context,
                            bps_watch **out_watch);

/* Step 2 above. events: any of BPS_READABLE, BPS_WRITABLE, BPS_TASKS_DONE. *out_ready: what holds now
 * (then nothing was armed), or 0 once armed. */
bps_status bps_watch_arm(bps_watch *watch, uint32_t events, uint32_t *out_ready);

/* Unregisters and frees the watch: no transition that starts after this returns calls
 * notify. Drops the watch's reference to the stream. */
bps_status bps_watch_release(bps_watch *watch);

/* A put for an async waiter: never waits. Like bps_stream_put with timeout 0, except that
 * a block stream's BPS_FULL is not counted as a rejected put: the caller waits (armed
 * watch) and tries again, accounting its wait below. Ownership as bps_stream_put. */
bps_status bps_stream_try_put(bps_stream *stream, void *item);

/* An async waiter's wait, for the stats (a blocking call accounts its own): */
#define BPS_ASYNC_PUT_WAITS 1u    /* a put found no room and waits: producer_waits, backpressure */
#define BPS_ASYNC_PUT_WAITED 2u   /* that wait ended (stored, closed, cancelled) after waited_ns */
#define BPS_ASYNC_PUT_GAVE_UP 3u  /* that put's timeout passed after waited_ns: one rejected put */
#define BPS_ASYNC_GET_WAITS 4u    /* a get found no item and waits: consumer_waits */
#define BPS_ASYNC_GET_WAITED 5u   /* that wait ended after waited_ns */
bps_status bps_stream_account_async_wait(bps_stream *stream, uint32_t what, int64_t waited_ns);

/* Closes: puts fail with BPS_CLOSED, gets drain then return BPS_CLOSED, waiters wake.
 * With BPS_CLOSE_IMMEDIATE the backlog is released (release()) on this thread.
 * Closing twice is fine (the second call can still discard with IMMEDIATE). */
bps_status bps_stream_close(bps_stream *stream, uint32_t flags);

/* Closes like bps_stream_close (not immediate), recording a producer's error: consumers
 * get every item put before it, then BPS_FAILED from every get. code: an errno value, or
 * 0 for an error that is not an OS error; message: UTF-8, copied (NULL: ""). Ignored (still
 * BPS_OK) when the stream is already closed. Items: unchanged. */
bps_status bps_stream_close_with_error(bps_stream *stream, int32_t code, const char *message);

/* The error the stream was closed with: *out_code gets its code, buffer (if non-NULL) the
 * message, NUL-terminated and cut to fit capacity bytes, *out_length (if non-NULL) the
 * message's full length. BPS_INVALID_STATE when the stream was not closed with an error. */
bps_status bps_stream_failure(bps_stream *stream, int32_t *out_code, char *buffer,
                              size_t capacity, size_t *out_length);

/* Marks `count` items as processed (queue.Queue.task_done). BPS_INVALID_STATE if that
 * would make unfinished tasks negative (nothing changes then). Items: unchanged. */
bps_status bps_stream_task_done(bps_stream *stream, uint64_t count);

/* Waits until every item put has been marked done, evicted or discarded.
 * BPS_TIMED_OUT when the timeout passes first. Items: unchanged. */
bps_status bps_stream_join(bps_stream *stream, int64_t timeout_ns, const bps_waiter *waiter);

/* Fills *out (out->size must be set) with one consistent snapshot. Items: unchanged. */
bps_status bps_stream_stats(bps_stream *stream, bps_stats *out);

/* Current depth (items buffered, plus reserved and not yet settled). Items: unchanged. */
bps_status bps_stream_depth(bps_stream *stream, uint64_t *out_depth);

/* Current capacity, or BPS_CAPACITY_UNBOUNDED. Items: unchanged. */
bps_status bps_stream_capacity(bps_stream *stream, int64_t *out_capacity);

/* Changes the capacity (1 ... BPS_CAPACITY_MAX or BPS_CAPACITY_UNBOUNDED). Growing wakes
 * blocked putters; shrinking below the depth keeps every buffered item (puts wait or
 * shed until the depth falls under the new capacity). Items: unchanged. */
bps_status bps_stream_set_capacity(bps_stream *stream, int64_t capacity);

/* The policy chosen at creation. Items: unchanged. */
bps_status bps_stream_policy(bps_stream *stream, bps_policy *out_policy);

/* *out_closed = 1 once the stream is closed, else 0. Items: unchanged. */
bps_status bps_stream_is_closed(bps_stream *stream, int *out_closed);

/* Calls visit(item, context) for each buffered item, oldest first, stopping at the
 * first nonzero result, which is returned through *out_result (0 if none).
 * THE ONE EXCEPTION: visit runs WITH the stream's lock held, so it must not call into
 * this stream, block, or take a lock some other holder of this lock may wait for.
 * Meant for a garbage collector's traversal. Items: borrowed for the call only. */
bps_status bps_stream_visit(bps_stream *stream, int (*visit)(void *item, void *context),
                            void *context, int *out_result);

/* ---------------------------------------------------------------------------
 * Readers: native producer threads shipped with bpstream. A reader owns one thread that
 * reads a file descriptor and puts frames (one per line, or one per read of at most
 * chunk_size bytes) into a stream, waiting as the stream's policy says, so a slow consumer
 * holds the reader back (and, through a pipe, the writing process too). At end of input
 * it closes the stream. It closes it WITH an error (bps_stream_failure: code and message),
 * after every frame read before the error, on:
 *   - a read error: the errno;
 *   - a line longer than max_line (LINES framing): EMSGSIZE, message naming max_line; the
 *     lines before it arrive whole;
 *   - a failed allocation: ENOMEM (the reader allocates with malloc/realloc and checks
 *     every one; it never aborts the process).
 * It never needs a language runtime's lock.
 *
 * MEMORY: besides the frames in the stream (at most its capacity), a reader holds one
 * read buffer (chunk_size bytes) and, for LINES, one unfinished line of at most max_line
 * bytes.
 *
 * SHARED SOURCES: the fd may be read by others at the same time (the caller's own fd, a
 * second reader, another process): stopping never waits for them. The reader never changes
 * a flag of the caller's open file description (O_NONBLOCK there would change the caller's
 * fd too). It reads sockets with recv(MSG_DONTWAIT); pipes and FIFOs through its OWN open
 * file description of the same pipe (/proc/self/fd/N reopened with O_NONBLOCK|O_CLOEXEC),
 * which counts as a reader of the pipe until the reader ends (writers see EPIPE only then);
 * regular files through the fd given (they never block, and the offset stays shared with
 * the caller's description). The residual case: character devices (ttys; reopening one may
 * open another object, /dev/ptmx a new pty), pipes /proc cannot reopen (no /proc,
 * permissions) and other kinds (eventfd...) are polled, then read through the fd given: if
 * something else reads the same description in blocking mode, bps_reader_stop may then
 * wait until the source has data again or ends.
 *
 * FORK: a reader belongs to the process that started it. In a child forked while it ran,
 * its thread does not exist; bps_reader_stop there does not join (see below). The fds a
 * reader opens (its wake-up channel, a reopened source) are close-on-exec; the fd it is
 * given should be too.
 * --------------------------------------------------------------------------- */
typedef struct bps_reader bps_reader;

typedef enum bps_framing {
    BPS_FRAMING_LINES = 0,   /* one frame per line, '\n' included (the last may lack it) */
    BPS_FRAMING_CHUNKS = 1   /* one frame per read: 1 ... chunk_size bytes, in order */
} bps_framing;

/* The longest line (LINES framing, '\n' included) a reader accepts when max_line is 0:
 * 64 MiB, far beyond any text or JSON line, while a source that never sends a newline
 * (/dev/zero, a binary file, a stuck peer) costs at most that much memory. */
#define BPS_READER_MAX_LINE_DEFAULT ((size_t)67108864u)
/* The largest max_line accepted (2^48: beyond any allocation, "no limit" in practice).
 * (Literals, not shifts: Swift's importer evaluates (size_t)1 << 48 to 0.) */
#define BPS_READER_MAX_LINE_MAX ((size_t)281474976710656ull)

/* Reader parameters. Zero it, then set size = sizeof(bps_reader_config) so it can grow. */
typedef struct bps_reader_config {
    size_t size;             /* sizeof(bps_reader_config) */
    bps_framing framing;
    size_t chunk_size;       /* 1 ... 2^30: the read size for both framings */
    size_t max_line;         /* LINES: 1 ... BPS_READER_MAX_LINE_MAX, or 0 for the default;
                                must be in that range for CHUNKS too, where it is unused */
} bps_reader_config;

/* Starts a reader thread. Takes ownership of fd (closed when the thread ends, on every
 * status). The reader holds its own reference to the stream. *out_reader is the caller's:
 * end it with bps_reader_stop. config (borrowed for the call) says how to frame; a config
 * whose size is too small, or a value out of range, gives BPS_INVALID_ARGUMENT. */
bps_status bps_reader_start_ex(bps_stream *stream, int fd, const bps_reader_config *config,
                               bps_reader **out_reader);

/* bps_reader_start_ex with max_line 0 (BPS_READER_MAX_LINE_DEFAULT). */
bps_status bps_reader_start(bps_stream *stream, int fd, bps_framing framing,
                            size_t chunk_size, bps_reader **out_reader);

/* Stops and joins the reader: closes the stream (not immediate: what was read stays
 * readable), wakes the thread wherever it waits (a put, or a read on a silent pipe), joins
 * it, and frees the reader. Returns after the thread has ended and closed its fds. Call it
 * without holding a lock the stream's release callback takes (a runtime's global lock).
 * In a child process forked while the reader ran, it does not join the thread (which does
 * not exist there): it closes the stream (plainly), closes the child's copies of the
 * reader's fds, frees what it can and returns at once. Call it in every such child that
 * goes on using the stream, so its consumers drain and stop instead of waiting forever. */
bps_status bps_reader_stop(bps_reader *reader);

/* ---------------------------------------------------------------------------
 * Clocks and rate controllers (ABI 3): TokenBucket, SlidingWindow, AIMD.
 *
 * HANDLES: bps_clock, bps_rate and bps_ticket are opaque and reference counted like
 * bps_stream: create gives the caller one reference; retain adds one; release drops one;
 * the object is freed with its last reference. A rate holds a reference to its clock;
 * a ticket holds one to its rate (or limiter). Every function may be called from any
 * thread at once on the same object while the caller holds a reference.
 *
 * CLOCKS: a bps_clock is a MANUAL clock (starts at 0, moves only by bps_clock_advance).
 * Where a bps_clock* is optional, NULL means CLOCK_MONOTONIC. Every time a controller
 * takes (timeouts, retry-after, waited ns, rates) is on ITS clock. When a manual clock
 * moves, every controller and limiter on it re-plans at once: a waiter due by then is
 * woken, a ticket due by then (or past its timeout) is notified. A wait hook's POLL
 * still runs every poll_interval_ns of REAL time while waiting (Ctrl-C works on a clock
 * that stands still).
 *
 * FORK: controllers, limiters and manual clocks are safe across fork() like streams (their
 * locks are taken around it). In the child the parent's waiting THREADS are gone from
 * every line (waiting no longer counts them); TICKETS stay queued, for their holder may
 * live on in the child: a holder that cannot (an event loop of another thread) must
 * release them there, or they stay first in line. Slots a limiter admitted stay counted
 * (in_flight) until released: a slot held by a thread of the parent never comes back
 * in the child.
 *
 * PERMITS: n >= 1. try_acquire never waits and takes nothing when it refuses; it refuses
 * (BPS_FULL) while anyone waits (no barging). Waiters (threads and tickets alike) are
 * served first come, first served; a waiter is woken only when its turn comes (the head
 * when its permits are due; a thread behind it when it becomes the head, or, where the
 * rate tells, at the time its turn is due): one wake-up per grant, no herd. An n that can never
 * be granted (above a bucket's burst or a window's limit) is BPS_INVALID_ARGUMENT.
 *
 * TICKETS: waiting without a thread (an event loop). After a refused try_acquire:
 *  1. bps_rate_enqueue (or bps_limiter_enqueue): the ticket joins the queue like a thread;
 *  2. bps_ticket_poll: granted (the permits are taken; the ticket is done), or not yet;
 *  3. notify(context, BPS_TICKET_WAKE) is called whenever the ticket should poll again
 *     (it became the head, the rate or limit changed, a manual clock moved to its due
 *     time or past its timeout (bps_ticket_set_timeout), a slot freed):
 *     OUTSIDE every lock, on any thread, possibly a native thread holding no runtime
 *     lock, so notify must only pass the news on (an eventfd write, a flag), never block;
 *  4. bps_ticket_release: always, once. A ticket not granted leaves the queue taking
 *     nothing (cancelled or timed out); if it was the head, the next waiter is woken.
 * release_context(context) (may be NULL) runs once, when the ticket is released AND no
 * notify is running, on whichever thread finishes last. An enqueue that does not return
 * BPS_OK leaves context with the CALLER: release_context is not called, notify never runs. Nothing is granted behind a
 * ticket's back: permits are taken only by a poll that returns granted.
 * --------------------------------------------------------------------------- */
typedef struct bps_clock bps_clock;
typedef struct bps_rate bps_rate;
typedef struct bps_ticket bps_ticket;

/* The events value a ticket's notify receives. */
#define BPS_TICKET_WAKE 16u

/* A new manual clock at time 0; *out_clock is the caller's reference. */
bps_status bps_clock_create_manual(bps_clock **out_clock);
/* Adds a reference. */
bps_status bps_clock_retain(bps_clock *clock);
/* Drops a reference (controllers on the clock keep their own). */
bps_status bps_clock_release(bps_clock *clock);
/* *out_ns = the clock's time in nanoseconds. clock NULL: CLOCK_MONOTONIC. */
bps_status bps_clock_now(const bps_clock *clock, int64_t *out_ns);
/* Moves the clock forward by ns >= 0 (negative: BPS_INVALID_ARGUMENT) and wakes or
 * notifies, outside the clock's lock, whoever on it is due. */
bps_status bps_clock_advance(bps_clock *clock, int64_t ns);

typedef enum bps_rate_kind {
    BPS_RATE_TOKEN_BUCKET = 0,   /* rate, burst, start_full */
    BPS_RATE_SLIDING_WINDOW = 1, /* limit, window_ns */
    BPS_RATE_AIMD = 2            /* initial ... cooldown_ns, paced like a bucket of burst */
} bps_rate_kind;

/* Creation parameters. Zero it, set size = sizeof(bps_rate_config) so it can grow, then
 * the fields of one kind (the others are ignored). Out of range: BPS_INVALID_ARGUMENT. */
typedef struct bps_rate_config {
    size_t size;            /* sizeof(bps_rate_config) */
    bps_rate_kind kind;
    bps_clock *clock;       /* NULL: CLOCK_MONOTONIC. Borrowed; the rate retains it */
    /* TOKEN_BUCKET (and AIMD's pacing) */
    double rate;            /* bucket: permits per second, finite, > 0 */
    int64_t burst;          /* bucket: 1 ... 2^31, the most tokens held. AIMD: the pacing
                               bucket's burst, 0 meaning 1 */
    uint8_t start_full;     /* bucket: nonzero starts with burst tokens, 0 with none */
    /* SLIDING_WINDOW */
    int64_t limit;          /* 1 ... 2^31 permits per window */
    int64_t window_ns;      /* sliding window and AIMD: the window, > 0 */
    /* AIMD: a limit in permits per second */
    double initial;         /* minimum <= initial <= maximum */
    double minimum;         /* > 0 (Python's default: 1) */
    double maximum;         /* >= minimum; INFINITY for no maximum */
    double increase;        /* > 0, added once per window with a success and no event */
    double decrease;        /* in (0, 1), the factor applied on a backpressure event */
    int64_t cooldown_ns;    /* >= 0: at most one decrease per cooldown; < 0: one window */
} bps_rate_config;

/* A snapshot. Set out->size = sizeof(bps_rate_stats) before the call. */
typedef struct bps_rate_stats {
    size_t size;            /* sizeof(bps_rate_stats) */
    bps_rate_kind kind;
    uint64_t granted;       /* grants (try_acquire, acquire, tickets); one per call, any n */
    uint64_t refused;       /* try_acquire refusals */
    uint64_t timed_out;     /* acquires whose timeout passed + tickets released as timed out */
    uint64_t cancelled;     /* acquires cancelled by POLL + tickets released ungranted */
    uint64_t waiting;       /* waiters in the queue now (threads and tickets) */
    uint64_t wait_ns;       /* total time granted waiters waited (on the rate's clock) */
    uint64_t wakeups;       /* times a waiter was woken to act: a signal to a parked
                               thread, a ticket's notify, or a thread's own due time
                               passing; POLL ticks are not counted */
    double rate;            /* permits per second now (AIMD: its limit) */
    double limit;           /* bucket: burst; window: limit; AIMD: its limit */
    double tokens;          /* bucket and AIMD: tokens now; window: permits free now */
    uint64_t increases;     /* AIMD: additive increases so far (0 for other kinds) */
    uint64_t decreases;     /* AIMD: multiplicative decreases so far */
} bps_rate_stats;

/* Creates a controller; *out_rate is the caller's reference. */
bps_status bps_rate_create(const bps_rate_config *config, bps_rate **out_rate);
/* Adds a reference. */
bps_status bps_rate_retain(bps_rate *rate);
/* Drops a reference; the last one frees the controller (no waiter can remain: each holds
 * a reference while it waits). */
bps_status bps_rate_release(bps_rate *rate);
/* Takes n permits if they are there and nobody waits: BPS_OK. Else BPS_FULL, nothing
 * taken. n < 1 or never grantable: BPS_INVALID_ARGUMENT. Never waits. */
bps_status bps_rate_try_acquire(bps_rate *rate, int64_t n);
/* The first look of an async waiter (then bps_rate_enqueue): like bps_rate_try_acquire,
 * except that BPS_FULL is not counted as a refusal (stats.refused counts try_acquire
 * refusals only; the caller goes on to wait, and its wait is counted as a grant, a timeout
 * or a cancellation). */
bps_status bps_rate_try_acquire_before_wait(bps_rate *rate, int64_t n);
/* Waits in line (timeout on the rate's clock: < 0 no limit, 0 never waits) for n permits
 * and takes them: BPS_OK, *out_waited_ns (may be NULL) the wait. BPS_TIMED_OUT or
 * BPS_CANCELLED (POLL): nothing taken. BPS_INVALID_ARGUMENT: n never grantable. */
bps_status bps_rate_acquire(bps_rate *rate, int64_t n, int64_t timeout_ns,
                            const bps_waiter *waiter, int64_t *out_waited_ns);
/* *out_ns = how long until a caller asking for n permits now would be granted if nothing
 * changes (rate, limit, departures), on the rate's clock: the waiters already in line are
 * served first, so it includes their permits (a bucket: the tokens they need, then n;
 * a window: the grants they add to the log). 0: now, and nobody waits. It is what a
 * caller deciding whether to wait (acquire with a timeout) needs. BPS_INVALID_ARGUMENT:
 * n never grantable. */
bps_status bps_rate_retry_after(bps_rate *rate, int64_t n, int64_t *out_ns);
/* Sets the rate in permits per second (finite, > 0). Bucket: its rate. Window: its limit
 * becomes round(rate * window) (must be >= 1). AIMD: its limit, clamped to [min, max].
 * Sleeping waiters re-plan at once. */
bps_status bps_rate_set_rate(bps_rate *rate, double per_second);
/* *out = permits per second now (window: limit / window; AIMD: its limit). */
bps_status bps_rate_get_rate(bps_rate *rate, double *out_per_second);
/* Sets the limit: bucket: its burst (integer 1 ... 2^31; tokens above it are dropped);
 * window: its limit (integer 1 ... 2^31); AIMD: its limit (clamped to [min, max]).
 * Sleeping waiters re-plan at once. */
bps_status bps_rate_set_limit(bps_rate *rate, double limit);
/* *out = the limit (bucket: burst; window: limit; AIMD: its limit). */
bps_status bps_rate_get_limit(bps_rate *rate, double *out_limit);
/* Feedback: a put went through while paced by this rate. AIMD grows on it; others ignore it. */
bps_status bps_rate_on_success(bps_rate *rate);
/* Feedback: backpressure (a put waited, a stream paused). AIMD backs off; others ignore it. */
bps_status bps_rate_on_backpressure(bps_rate *rate);
/* Fills *out (out->size set by the caller) with one snapshot. */
bps_status bps_rate_get_stats(bps_rate *rate, bps_rate_stats *out);

/* Joins the queue for n permits (see TICKETS above); *out_ticket is the caller's and must
 * be released with bps_ticket_release. notify must not be NULL. BPS_INVALID_ARGUMENT:
 * n never grantable. Nothing is taken until a poll returns granted. Context: the ticket's
 * on BPS_OK (release_context frees it); on any other status still the caller's (no
 * callback is ever called with it). */
bps_status bps_rate_enqueue(bps_rate *rate, int64_t n, bps_notify_fn notify,
                            bps_context_release_fn release_context, void *context,
                            bps_ticket **out_ticket);
/* Tries to take the ticket's permits. BPS_OK (unless an argument is bad), with
 * *out_retry_ns: 0 granted (taken; the ticket is done, later polls say 0 again);
 * > 0 not yet, poll again in that many ns on the clock (its permits are due, or its
 * timeout passes, then; or on notify); -1 not yet, wait for notify (not the head, or
 * waiting for a slot; never with a timeout set). BPS_TIMED_OUT: not granted and its
 * timeout (bps_ticket_set_timeout) has passed: nothing taken, it stays queued until
 * released (release it with timed_out = 1). BPS_INVALID_ARGUMENT: the limit was lowered
 * below n; the ticket left the queue. */
bps_status bps_ticket_poll(bps_ticket *ticket, int64_t *out_retry_ns);
/* Gives the ticket a timeout on its owner's clock, counted from its enqueue (< 0: none,
 * the default), so the core times it like a blocking acquire's: a manual clock moving past
 * it notifies the ticket, and a poll reports the time left (> 0) or BPS_TIMED_OUT. The
 * holder needs no timer of its own on a manual clock. Poll after setting it (it may have
 * passed already). A granted or released-and-not-freed ticket ignores it. */
bps_status bps_ticket_set_timeout(bps_ticket *ticket, int64_t timeout_ns);
/* Leaves the queue and frees the ticket. An ungranted ticket takes nothing and counts as
 * cancelled (timed_out nonzero: as timed out); if it was the head, the next is woken.
 * A granted ticket's permits stay taken (a limiter's slot: bps_limiter_release_slot). */
bps_status bps_ticket_release(bps_ticket *ticket, int timed_out);

/* ---------------------------------------------------------------------------
 * Limiter (ABI 3): admission by work in progress and rate, atomically.
 *
 * A limiter admits one unit of work per grant: it takes one SLOT (of max_concurrent)
 * and one rate TOKEN (of a bucket: rate, burst) together, or nothing: a refusal by the
 * slot limit leaves the tokens untouched and the reverse. bps_limiter_release_slot gives
 * the slot back (tokens refill with time). Handles, clocks, threads, FIFO without
 * barging, one wake-up per grant, and tickets are as in the rate section above: each
 * released slot wakes exactly one waiter; raising max_concurrent or the rate grants
 * waiters at once. A granted limiter ticket holds a slot until release_slot.
 * --------------------------------------------------------------------------- */
typedef struct bps_limiter bps_limiter;

/* No concurrency limit (max_concurrent), or no rate limit (rate = 0). */
#define BPS_LIMIT_NONE ((int64_t)-1)

/* Set size = sizeof(bps_limiter_config). At least one of the two limits. */
typedef struct bps_limiter_config {
    size_t size;             /* sizeof(bps_limiter_config) */
    int64_t max_concurrent;  /* 1 ... 2^31, or BPS_LIMIT_NONE */
    double rate;             /* tokens per second, finite, > 0; or 0 for no rate limit */
    int64_t burst;           /* 1 ... 2^31 (the bucket starts full); 0 means 1 */
    bps_clock *clock;        /* NULL: CLOCK_MONOTONIC. Borrowed; the limiter retains it */
} bps_limiter_config;

/* A snapshot. Set out->size = sizeof(bps_limiter_stats) before the call. */
typedef struct bps_limiter_stats {
    size_t size;             /* sizeof(bps_limiter_stats) */
    uint64_t granted;        /* admissions */
    uint64_t refused;        /* try_acquire refusals */
    uint64_t timed_out;      /* acquires whose timeout passed + tickets released as timed out */
    uint64_t cancelled;      /* acquires cancelled by POLL + tickets released ungranted */
    uint64_t released;       /* slots given back */
    uint64_t in_flight;      /* slots held now */
    uint64_t waiting;        /* waiters now */
    uint64_t wait_ns;        /* total time granted waiters waited (limiter's clock) */
    uint64_t wakeups;        /* times a parked thread was woken to act */
    int64_t max_concurrent;  /* or BPS_LIMIT_NONE */
    double rate;             /* or 0: no rate limit */
    int64_t burst;           /* 0 when no rate limit */
    double tokens;           /* rate tokens now (0 when no rate limit) */
    double utilization;      /* in_flight / max_concurrent (0 without a slot limit) */
} bps_limiter_stats;

/* Creates a limiter; *out_limiter is the caller's reference. */
bps_status bps_limiter_create(const bps_limiter_config *config, bps_limiter **out_limiter);
/* Adds a reference. */
bps_status bps_limiter_retain(bps_limiter *limiter);
/* Drops a reference; the last frees it (held slots are simply forgotten). */
bps_status bps_limiter_release(bps_limiter *limiter);
/* Admits one (a slot and a token) if both are there and nobody waits: BPS_OK. Else
 * BPS_FULL, nothing taken. Never waits. */
bps_status bps_limiter_try_acquire(bps_limiter *limiter);
/* The first look of an async waiter (then bps_limiter_enqueue): like
 * bps_limiter_try_acquire, except that BPS_FULL is not counted as a refusal. */
bps_status bps_limiter_try_acquire_before_wait(bps_limiter *limiter);
/* Waits in line (timeout on the limiter's clock) to be admitted: BPS_OK, *out_waited_ns
 * (may be NULL) the wait. BPS_TIMED_OUT or BPS_CANCELLED (POLL): nothing taken. */
bps_status bps_limiter_acquire(bps_limiter *limiter, int64_t timeout_ns,
                               const bps_waiter *waiter, int64_t *out_waited_ns);
/* Gives one slot back and wakes the next waiter it admits. BPS_INVALID_STATE when no
 * slot is held (nothing changes). Slots are counted (in_flight) with or without a slot
 * limit: every admission holds one until it is given back. */
bps_status bps_limiter_release_slot(bps_limiter *limiter);
/* Sets max_concurrent (1 ... 2^31, or BPS_LIMIT_NONE if a rate is set). Raising it admits
 * waiters at once; lowering it below in_flight takes nothing back. */
bps_status bps_limiter_set_max_concurrent(bps_limiter *limiter, int64_t max_concurrent);
/* Sets the rate (> 0, or 0: none, if max_concurrent is set) and burst (1 ... 2^31; 0
 * keeps the current one, 1 if there was none). A new rate limit starts full. */
bps_status bps_limiter_set_rate(bps_limiter *limiter, double rate, int64_t burst);
/* *out_ns = how long until a caller would be admitted if nothing changes, the waiters in
 * line served first (as bps_rate_retry_after): 0 now (nobody waits), > 0 the rate's delay
 * for them and it, -1 only a released slot can tell. */
bps_status bps_limiter_retry_after(bps_limiter *limiter, int64_t *out_ns);
/* Fills *out (out->size set by the caller) with one snapshot. */
bps_status bps_limiter_get_stats(bps_limiter *limiter, bps_limiter_stats *out);
/* Joins the queue for one admission (TICKETS, rate section). A granted ticket holds a slot
 * (release it with bps_limiter_release_slot); released ungranted, it takes nothing.
 * Context as bps_rate_enqueue: the ticket's on BPS_OK, else still the caller's. */
bps_status bps_limiter_enqueue(bps_limiter *limiter, bps_notify_fn notify,
                               bps_context_release_fn release_context, void *context,
                               bps_ticket **out_ticket);

/* ---------------------------------------------------------------------------
 * Flow control (ABI 3): watermark states, pacing by a rate controller.
 * With fill = depth / capacity, a bounded stream is in one of four flow states:
 *   NORMAL     fill < throttle_at                  puts are never delayed
 *   THROTTLED  throttle_at <= fill <= pause_at     a put that may wait is delayed once by
 *              min_delay + (max_delay - min_delay) * (fill - throttle_at) / (pause_at - throttle_at)
 *   PAUSED     fill > pause_at, not full           a put that may wait waits until the state
 *                                                  falls below PAUSED, or its timeout passes
 *   DROPPING   full                                the policy decides (block: waits as PAUSED)
 * With hysteresis h > 0 a state is left downwards only below its entry mark minus h
 * (DROPPING: below 1 - h). Unbounded streams are always NORMAL. Every depth change
 * updates the state (puts, gets, evictions, clears, settles, close, set_capacity).
 * Counting: throttle_events counts NORMAL -> THROTTLED, pause_events transitions from
 * NORMAL or THROTTLED to PAUSED or DROPPING; time_paused_ns the time in PAUSED or DROPPING.
 * GATED PUTS (bps_config.flow = 1): bps_stream_put, put_many (once per call, before its
 * first item), put_frame(s) and readers with a timeout != 0. Delays and waits run without
 * the stream's lock, run the waiter's hooks (BEGIN/POLL/END: a binding releases its runtime
 * lock, POLL cancels), count against the timeout (a delay longer than the time left ends
 * the put with BPS_FULL at its deadline, counted as rejected) and end at once on close. A
 * put with timeout 0 and bps_stream_try_put are never delayed.
 * PACING (bps_config.rate): every put that may wait first takes one permit per item from
 * the rate (waiting without the stream's lock, hooks as above, within the timeout); a put
 * with timeout 0 takes one only if it is there, else fails with BPS_FULL (rejected).
 * bps_stream_try_put is not paced. BPS_POLICY_ADAPTIVE feeds the rate (an AIMD):
 * backpressure when a put waited for room or the stream entered PAUSED/DROPPING, success
 * when a put the rate held went through in NORMAL.
 * --------------------------------------------------------------------------- */
typedef enum bps_flow_state {
    BPS_FLOW_NORMAL = 0,
    BPS_FLOW_THROTTLED = 1,
    BPS_FLOW_PAUSED = 2,
    BPS_FLOW_DROPPING = 3
} bps_flow_state;

/* *out_state gets the flow state now. Items: unchanged. */
bps_status bps_stream_flow_state(bps_stream *stream, bps_flow_state *out_state);

/* For a caller that passes the flow gate itself because it cannot block (an asyncio put):
 * what the gate would do to a put that may wait arriving now. Absorbs the consumers'
 * published deliveries first (under the lock, briefly; never waits), so it is exact.
 *   BPS_FLOW_NORMAL     pass (also: no bps_config.flow, closed, or full with a policy
 *                       other than block: the policy decides); *out_delay_ns = 0
 *   BPS_FLOW_THROTTLED  wait *out_delay_ns (>= 0) once, then put
 *   BPS_FLOW_PAUSED     wait until this answers below PAUSED (DROPPING with room under
 *                       hysteresis answers PAUSED, as the gate treats it)
 *   BPS_FLOW_DROPPING   full, block: wait for room (a producer wait), then ask again
 * Such a caller counts its waits itself: a timeout passed in the gate or on the rate is
 * bps_stream_flow_gave_up; a wait for room is BPS_ASYNC_PUT_*. Items: unchanged. */
bps_status bps_stream_flow_gate(bps_stream *stream, bps_flow_state *out_state,
                                int64_t *out_delay_ns);

/* Counts one put that gave up in a flow gate or on a rate it passed itself (its timeout
 * passed first, or the rate can never grant it) as rejected, as a blocking put's is. */
bps_status bps_stream_flow_gave_up(bps_stream *stream);

/* Called once per flow transition, in order, WITHOUT the stream's lock, on the thread whose
 * call made the transition (or on the thread already delivering earlier ones: one thread
 * delivers at a time). It may call into the stream. fill: depth / capacity after it. */
typedef void (*bps_flow_fn)(void *context, bps_flow_state old_state, bps_flow_state new_state,
                            double fill);

typedef struct bps_flow_listener bps_flow_listener;

/* Registers fn; *out_listener is the caller's (end it with bps_flow_listener_remove).
 * context is the caller's until the listener is removed AND no call of fn is running:
 * then release_context(context) runs once (may be NULL), on whichever thread finishes
 * last. The listener holds a reference to the stream. Transitions made before this
 * returns are not reported. Items: unchanged. */
bps_status bps_stream_on_flow_change(bps_stream *stream, bps_flow_fn fn,
                                     bps_context_release_fn release_context, void *context,
                                     bps_flow_listener **out_listener);

/* Unregisters and frees the listener: no transition made after this returns reaches fn
 * (one being delivered may still). Drops its reference to the stream. */
bps_status bps_flow_listener_remove(bps_flow_listener *listener);

#ifdef __cplusplus
}
#endif

#endif /* BPSTREAM_H */
