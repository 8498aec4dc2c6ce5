/* nb_inst: one function instance: a sandboxed runtime process serving one invocation at a time.
 *
 * Lifecycle (changed only through inst_set_state(), which logs every transition):
 *
 *   STARTING --ready--> IDLE --dispatch--> BUSY --answer--> IDLE ...
 *      |                  |                  |
 *      +--init failure----+--stop------------+--timeout/crash--> STOPPING --exit--> STOPPED
 *
 * The instance talks to its runtime over the native channel (docs/internals/channel.md) or,
 * for custom runtimes, over the Lambda Runtime API served on a listener inside the instance's
 * own network namespace (docs/internals/rapi.md); the first one the runtime uses wins.
 * stdout/stderr are captured line by line into nb_logs, tagged with the request id.
 *
 * The owner (the scheduler's pool) gets every event through nb_inst_hooks and never sees the
 * transport. Memory: the owner creates instances with nb_inst_start(); the instance frees
 * itself after STOPPED once its process is reaped and its pipes are drained, calling
 * hooks->freed last.
 *
 * Threads: an instance belongs to the loop it was started on (its nb_inst_loop) and every call
 * about it is made on that loop's thread. The exceptions are nb_inst_reaped(), called by the
 * one thread that reaps children, which hands the exit to the owning loop, and instance ids,
 * which are unique across loops. */
#ifndef NB_INSTANCE_H
#define NB_INSTANCE_H

#include "base/err.h"
#include "function/function.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct nb_inst nb_inst;
typedef struct nb_logs nb_logs;

typedef enum nb_inst_state {
    NB_INST_STARTING,
    NB_INST_IDLE,
    NB_INST_BUSY,
    NB_INST_STOPPING,
    NB_INST_STOPPED,
} nb_inst_state;

const char *nb_inst_state_name(nb_inst_state s);

/* What an invocation hands to an instance. The strings are copied at dispatch; the event is
 * not: it must stay valid until hooks->result. */
typedef struct nb_inst_job {
    const char *request_id;
    const char *function_arn;
    const char *trace_id;
    const char *client_context;
    const char *event;
    size_t event_len;
    int64_t deadline_ms; /* epoch ms */
    int64_t timeout_ms;
} nb_inst_job;

/* NB_OUTCOME_UNDELIVERED: the runtime exited before it fetched the job (a Runtime API runtime
 * that had not called /next again since its last answer), so the job never ran; the result
 * still carries the Runtime.ExitError to report if the owner does not run it elsewhere. */
enum nb_inst_outcome {
    NB_OUTCOME_OK,
    NB_OUTCOME_HANDLED,
    NB_OUTCOME_UNHANDLED,
    NB_OUTCOME_UNDELIVERED
};

typedef struct nb_inst_result {
    enum nb_inst_outcome outcome;
    const char *error_type; /* "" when ok */
    const char *body;       /* result or error JSON; valid during the hook call */
    size_t len;
    const char *content_type;
} nb_inst_result;

/* A call the function makes while it serves a job: invoke another function, send to a queue,
 * publish, emit (docs/internals/calls.md). From the channel's CALL frame or the private Runtime
 * API path. Everything is valid only during the hook call. */
#define NB_INST_MAX_CALLS 64 /* outstanding per instance; past it: 429 at once */
typedef struct nb_inst_call {
    uint32_t call_id;  /* the runtime's (channel) or the instance's own (HTTP) */
    char op[16];       /* "invoke", "invoke_async", "send", "publish", "emit" */
    char target[256];  /* function, queue or topic name; "" for emit */
    const char *attrs; /* JSON object text; attrs_len 0: none */
    size_t attrs_len;
    const char *body;
    size_t len;
} nb_inst_call;

typedef struct nb_inst_hooks {
    void (*ready)(nb_inst *inst); /* STARTING -> IDLE */
    /* The job ended. If the instance carries on, it is already IDLE (BUSY -> IDLE) when this is
     * called, and the owner takes it back here (it may dispatch the next job from inside the
     * call); no other hook says so. */
    void (*result)(nb_inst *inst, void *tag, const nb_inst_result *res);
    void (*unavailable)(nb_inst *inst); /* IDLE -> STOPPING: take it off the free list */
    /* -> STOPPED. When it never became ready, init_error says why. */
    void (*stopped)(nb_inst *inst, const nb_inst_result *init_error);
    void (*freed)(nb_inst *inst); /* memory is about to go */
    /* The job tagged tag made a call. The owner answers it with nb_inst_call_done, at once or
     * later, while the job runs; once the job ended (hooks->result) it must not any more. */
    void (*call)(nb_inst *inst, void *tag, const nb_inst_call *call);
} nb_inst_hooks;

/* The instances of one loop: their list (for shutdown and for finding a reaped pid) and the
 * wake-up through which exits reaped on another thread reach the loop. */
typedef struct nb_inst_loop nb_inst_loop;

typedef struct nb_inst_env {
    uv_loop_t *loop;
    nb_inst_loop *iloop;      /* of the same loop */
    const char *runtimes_dir; /* DATA/runtimes */
    const char *code_root;    /* DATA/code */
    nb_logs *logs;
    int64_t init_timeout_ms;
} nb_inst_env;

struct nb_inst {
    int id;
    char name[24]; /* "i-<id>" */
    nb_inst_state state;
    nb_fn_version *ver;   /* ref held for the instance's life */
    void *owner;          /* the pool */
    void *owner_link[2];  /* the owner's list links (the pool's idle stack) */
    unsigned owner_flags; /* the owner's; the instance never reads or writes it */
    int64_t started_us, ready_us, idle_since_us;
    int64_t invocations;
    /* Peak memory of the instance so far in MB (its cgroup's memory.peak), for the REPORT
     * line's Max Memory Used. Filled by the sandbox; 0 = not measured, reported as absent. */
    int64_t max_memory_used_mb;
    /* CPU time of the last job in µs: the cgroup's usage between dispatch and result (every
     * process of the instance). -1 = not measured (no cgroup or no CPU accounting). */
    int64_t cpu_us;
};

/* Spawns an instance of ver. On failure (spawn impossible, bootstrap not executable) returns
 * NULL and fills res_out with the error to give the waiting invocation. */
nb_inst *nb_inst_start(const nb_inst_env *env, nb_fn_version *ver, const nb_inst_hooks *hooks,
                       void *owner, nb_inst_result *res_out, char *errbuf, size_t errsize);
/* IDLE -> BUSY. tag is passed back to hooks->result exactly once. */
int nb_inst_dispatch(nb_inst *inst, const nb_inst_job *job, void *tag);
/* Answers call_id of the job in flight: status 200/202 done, 4xx/5xx refused; error_code ""
 * (done), "Unhandled"/"Handled" (an invoked function failed, status 200) or the platform's code;
 * body the result or the error JSON. A call_id the instance no longer waits for (its job ended,
 * its Runtime API connection closed) is dropped. Loop thread, while the job runs. */
void nb_inst_call_done(nb_inst *inst, uint32_t call_id, int status, const char *error_code,
                       const char *body, size_t len);
/* Stops the instance (killing it if busy: the owner must not do that to a busy instance
 * unless it is shutting down). */
void nb_inst_stop(nb_inst *inst, const char *why);
/* On the loop's thread. Freed with nb_inst_loop_free once none of its instances is left. */
nb_inst_loop *nb_inst_loop_new(uv_loop_t *loop);
void nb_inst_loop_free(nb_inst_loop *l);
/* Stops every instance of the loop (shutdown). Loop thread. */
void nb_inst_stop_all(nb_inst_loop *l);
/* Called by the daemon's SIGCHLD handler, on any thread: the exit is handed to the loop that
 * owns pid (and handled there on its next turn). An exit reaped before its instance was
 * registered (a child that died within its spawn) is kept until it is. 1 if routed. */
int nb_inst_reaped(pid_t pid, int status);
int64_t nb_inst_init_ms(const nb_inst *inst);

#endif
