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
 *  - The stream never calls caller code while holding its lock, with ONE
 *    documented exception: bps_stream_visit (a garbage collector's traversal).
 *
 * BLOCKING AND WAIT HOOKS
 *  - Blocking calls take a timeout in nanoseconds: < 0 waits without limit,
 *    0 never waits, > 0 waits at most that long (CLOCK_MONOTONIC).
 *  - A blocking call first tries without waiting. Only when it must wait does it
 *    call the optional bps_waiter hook: BPS_WAIT_BEGIN once before the first
 *    wait, BPS_WAIT_POLL every poll_interval_ns while waiting (a nonzero return
 *    cancels the call with BPS_CANCELLED and changes nothing), and BPS_WAIT_END
 *    once after the last wait, before the call returns. Hooks run on the calling
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
#define BPS_ABI_VERSION 1

/* The stream. Opaque: only pointers to it exist, made by bps_stream_create. */
typedef struct bps_stream bps_stream;

/* Capacity meaning "no bound": the buffer grows on demand (queue.Queue(maxsize=0)). */
#define BPS_CAPACITY_UNBOUNDED ((int64_t)-1)
/* The largest bounded capacity accepted (2^30 items). */
#define BPS_CAPACITY_MAX ((int64_t)1 << 30)

/* Every call's outcome. bps_status_string() names each one. */
typedef enum bps_status {
    BPS_OK = 0,               /* done */
    BPS_SHED = 1,             /* put accepted but the item was shed (drop_newest); caller keeps it */
    BPS_FULL = 2,             /* no room: reject policy, or a block put's timeout passed */
    BPS_EMPTY = 3,            /* nothing to get before the timeout passed */
    BPS_CLOSED = 4,           /* put: the stream is closed. get: closed and drained */
    BPS_CANCELLED = 5,        /* a wait hook's POLL returned nonzero; nothing changed */
    BPS_TIMED_OUT = 6,        /* join: tasks remained unfinished when the timeout passed */
    BPS_INVALID_ARGUMENT = 7, /* NULL handle or out-parameter, NULL item, bad number or enum */
    BPS_INVALID_STATE = 8,    /* task_done called more times than items were put */
    BPS_NO_MEMORY = 9         /* allocation failed */
} bps_status;

/* What a full stream does with the next put. Chosen at creation, never implicit. */
typedef enum bps_policy {
    BPS_POLICY_BLOCK = 0,       /* the putter waits for room (until its timeout: BPS_FULL) */
    BPS_POLICY_DROP_OLDEST = 1, /* the oldest item is evicted (released), the new one stored */
    BPS_POLICY_DROP_NEWEST = 2, /* the new item is shed (BPS_SHED), the backlog keeps its order */
    BPS_POLICY_REJECT = 3,      /* the put fails at once with BPS_FULL */
    BPS_POLICY_DROP_ALL = 4     /* the whole backlog is cleared (released), the new item stored */
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
    uint64_t depth;                /* items buffered now */
    uint64_t peak_depth;           /* the most items ever buffered at once */
    int64_t capacity;              /* current capacity, or BPS_CAPACITY_UNBOUNDED */
    uint64_t backpressure_events;  /* puts that had to wait, or that shed/evicted/cleared */
    uint64_t producer_waits;       /* puts that had to wait */
    uint64_t consumer_waits;       /* gets that had to wait */
    uint64_t producer_wait_ns;     /* total time producers spent waiting */
    uint64_t consumer_wait_ns;     /* total time consumers spent waiting */
    uint64_t unfinished_tasks;     /* items put and not yet marked done (task_done) */
    double produced_per_second;    /* over the recent window below */
    double consumed_per_second;    /* over the recent window below */
    double window_seconds;         /* the span the two rates above cover (about 1 s) */
    uint8_t closed;                /* 1 once closed */
} bps_stats;

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

/* Puts one item. BPS_OK: the stream owns it. Any other status: the caller still does. */
bps_status bps_stream_put(bps_stream *stream, void *item, int64_t timeout_ns,
                          const bps_waiter *waiter);

/* Puts items[0..count) in order; the first *out_taken are the stream's, the rest the
 * caller's. *out_taken is written whatever the status (when out_taken is non-NULL).
 * BPS_OK: all taken. BPS_SHED: the rest were shed (drop_newest). BPS_FULL/BPS_CLOSED/
 * BPS_CANCELLED: the rest were not put. One timeout covers the whole call. */
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

/* Closes: puts fail with BPS_CLOSED, gets drain then return BPS_CLOSED, waiters wake.
 * With BPS_CLOSE_IMMEDIATE the backlog is released (release()) on this thread.
 * Closing twice is fine (the second call can still discard with IMMEDIATE). */
bps_status bps_stream_close(bps_stream *stream, uint32_t flags);

/* Marks `count` items as processed (queue.Queue.task_done). BPS_INVALID_STATE if that
 * would make unfinished tasks negative (nothing changes then). Items: unchanged. */
bps_status bps_stream_task_done(bps_stream *stream, uint64_t count);

/* Waits until every item put has been marked done, evicted or discarded.
 * BPS_TIMED_OUT when the timeout passes first. Items: unchanged. */
bps_status bps_stream_join(bps_stream *stream, int64_t timeout_ns, const bps_waiter *waiter);

/* Fills *out (out->size must be set) with one consistent snapshot. Items: unchanged. */
bps_status bps_stream_stats(bps_stream *stream, bps_stats *out);

/* Current depth (items buffered). Items: unchanged. */
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

#ifdef __cplusplus
}
#endif

#endif /* BPSTREAM_H */
