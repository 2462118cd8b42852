/* FIFO: requests are served strictly in arrival order. */
#include "daemon/sched.h"

static int fifo_push(struct sched *s, struct lease *l, int64_t now)
{
	(void) now;
	l->q_next = NULL;
	l->q_prev = s->last;
	if (s->last)
		s->last->q_next = l;
	else
		s->first = l;
	s->last = l;
	s->len++;
	return 0;
}

static void fifo_remove(struct sched *s, struct lease *l)
{
	if (l->q_prev)
		l->q_prev->q_next = l->q_next;
	else
		s->first = l->q_next;
	if (l->q_next)
		l->q_next->q_prev = l->q_prev;
	else
		s->last = l->q_prev;
	l->q_prev = l->q_next = NULL;
	s->len--;
}

static struct lease *fifo_peek(struct sched *s, int64_t now)
{
	(void) now;
	return s->first;
}

static void fifo_walk(struct sched *s, int64_t now, sched_walk_fn fn, void *arg)
{
	(void) now;
	int position = 1;
	for (struct lease *l = s->first, *next; l; l = next, position++) {
		next = l->q_next; /* fn may not remove, but reading ahead costs nothing */
		fn(l, position, arg);
	}
}

static void fifo_destroy(struct sched *s)
{
	s->first = s->last = NULL;
	s->len = 0;
}

static const struct sched_ops fifo_ops = {
	.name = "fifo",
	.push = fifo_push,
	.remove = fifo_remove,
	.peek = fifo_peek,
	.walk = fifo_walk,
	.destroy = fifo_destroy,
};

void sched_fifo_init(struct sched *s)
{
	s->ops = &fifo_ops;
	s->len = 0;
	s->first = s->last = NULL;
}
