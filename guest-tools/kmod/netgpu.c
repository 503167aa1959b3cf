// SPDX-License-Identifier: GPL-2.0
/*
 * netgpu: guest driver for the netgpu virtual GPU (a PCI function served by netgpu-vdev).
 *
 * What it owns:
 *  - PCI binding: BAR0 registers, MSI-X (one vector per queue plus a device-event vector,
 *    INTx as fallback), DMA mask.
 *  - /dev/netgpuN: each open file gets its own queue pair; NETGPU_IOC_SUBMIT runs a batch of
 *    the device's command descriptors whose data buffers user space names by virtual
 *    address. Buffers are pinned and DMA-mapped here and rewritten into guest-physical
 *    scatter lists (inline, or an indirect table), so no process can make the device touch
 *    memory that is not its own.
 *  - Teardown: release() disables the queue, waits until the device reports it stopped
 *    touching memory (STATUS.ENABLED clear), then unpins everything. Disabling a queue also
 *    makes the device destroy every remote object created through it, so a process that dies
 *    mid-command leaves neither pinned pages nor GPU memory behind.
 *  - sysfs: the remote GPU's name, memory, executor and the link state.
 *
 * The device ABI is docs/device-abi.md; netgpu_abi.h mirrors proto/src/abi.rs and a test
 * checks they agree.
 */

#include <linux/cdev.h>
#include <linux/delay.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/rwsem.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

#include "netgpu_abi.h"
#include "include/uapi/netgpu.h"

#define DRV_NAME "netgpu"
#define NETGPU_QUEUE_SIZE 256
#define NETGPU_MAX_DEVICES 64
#define NETGPU_READY_TIMEOUT_MS 15000
#define NETGPU_STOP_TIMEOUT_MS 10000
#define NETGPU_POLL_MS 50

#ifndef PCI_IRQ_INTX
#define PCI_IRQ_INTX PCI_IRQ_LEGACY
#endif

struct netgpu_dev;

/* One user buffer of one command, pinned and DMA-mapped. */
struct netgpu_buf {
	struct page **pages;
	unsigned int npages;
	struct sg_table sgt;
	enum dma_data_direction dir;
	bool mapped;
};

struct netgpu_slot {
	struct netgpu_buf bufs[2];
	unsigned int nbufs;
	struct netgpu_sg_entry *table;	/* indirect table, when more than 3 segments */
	dma_addr_t table_dma;
	size_t table_size;
	struct netgpu_completion cpl;
	bool done;
};

struct netgpu_batch {
	u32 count;
	u32 remaining;			/* protected by queue->lock */
	struct netgpu_slot slots[];
};

struct netgpu_queue {
	struct netgpu_dev *ndev;
	u16 qid;
	u16 vector;
	u32 size;
	struct netgpu_command *sq;
	dma_addr_t sq_dma;
	struct netgpu_completion *cq;
	dma_addr_t cq_dma;
	u32 sq_tail;
	u32 cq_head;
	u16 phase;
	spinlock_t lock;		/* cq_head, phase, batch completion state */
	wait_queue_head_t wq;
	struct mutex submit_lock;	/* one batch in flight per queue */
	struct netgpu_batch *batch;	/* in flight, or finished but not yet reaped */
	bool broken;			/* device error, reset or removal: no more submissions */
};

struct netgpu_dev {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct kref ref;
	struct rw_semaphore io_sem;	/* regs valid while held and !dead */
	bool dead;
	int minor;
	struct device *dev;
	int nvec;
	int irqs[NETGPU_MSIX_VECTORS];	/* Linux irq of each vector */
	bool msix;
	u32 max_queues;
	u32 max_sg;
	u32 max_transfer;
	u64 features;
	spinlock_t qlock;		/* queues[] */
	struct netgpu_queue *queues[NETGPU_MAX_QUEUES];
	wait_queue_head_t event_wq;
};

static bool msix = true;
module_param(msix, bool, 0444);
MODULE_PARM_DESC(msix, "use MSI-X if the device offers it (default true; false: INTx only)");

/*
 * One character device for all minors; open() finds the device by minor in netgpu_idr. The
 * cdev is not embedded in struct netgpu_dev on purpose: the VFS keeps a reference to the
 * cdev until after release() returns, which would outlive a device freed by its last close
 * after hot-unplug. Entries are NULL while probe is unfinished and removed first thing in
 * remove(), so open() sees only live devices.
 */
static dev_t netgpu_devt;
static struct cdev netgpu_cdev;
static struct class *netgpu_class;
static DEFINE_IDR(netgpu_idr);
static DEFINE_MUTEX(netgpu_idr_lock);

/* ---------------------------------------------------------------- registers */

static u32 rd32(struct netgpu_dev *nd, u32 off)
{
	return readl(nd->regs + off);
}

static u64 rd64(struct netgpu_dev *nd, u32 off)
{
	return lo_hi_readq(nd->regs + off);
}

static void wr32(struct netgpu_dev *nd, u32 off, u32 v)
{
	writel(v, nd->regs + off);
}

static void wr64(struct netgpu_dev *nd, u32 off, u64 v)
{
	lo_hi_writeq(v, nd->regs + off);
}

static u32 qreg(u16 qid, u32 field)
{
	return NETGPU_REG_QUEUE_BASE + qid * NETGPU_REG_QUEUE_STRIDE + field;
}

static void netgpu_dev_release(struct kref *ref)
{
	struct netgpu_dev *nd = container_of(ref, struct netgpu_dev, ref);

	pci_dev_put(nd->pdev);
	kfree(nd);
}

/* ---------------------------------------------------------------- buffers */

static void netgpu_buf_release(struct netgpu_dev *nd, struct netgpu_buf *b)
{
	if (b->mapped)
		dma_unmap_sgtable(&nd->pdev->dev, &b->sgt, b->dir, 0);
	if (b->sgt.sgl)
		sg_free_table(&b->sgt);
	if (b->pages) {
		unpin_user_pages_dirty_lock(b->pages, b->npages, b->dir == DMA_FROM_DEVICE);
		kvfree(b->pages);
	}
	memset(b, 0, sizeof(*b));
}

/* Pins [uaddr, uaddr + len) and maps it for DMA in direction @dir. */
static int netgpu_buf_pin(struct netgpu_dev *nd, struct netgpu_buf *b, u64 uaddr, u64 len,
			  enum dma_data_direction dir)
{
	unsigned long first = uaddr >> PAGE_SHIFT;
	unsigned long last;
	long pinned;
	int ret;

	memset(b, 0, sizeof(*b));
	b->dir = dir;
	if (len == 0)
		return 0;
	if (uaddr + len < uaddr)
		return -EFAULT;
	last = (uaddr + len - 1) >> PAGE_SHIFT;
	b->npages = last - first + 1;
	b->pages = kvmalloc_array(b->npages, sizeof(*b->pages), GFP_KERNEL);
	if (!b->pages)
		return -ENOMEM;
	pinned = pin_user_pages_fast(uaddr & PAGE_MASK, b->npages,
				     dir == DMA_FROM_DEVICE ? FOLL_WRITE : 0, b->pages);
	if (pinned < 0) {
		kvfree(b->pages);
		b->pages = NULL;
		return pinned;
	}
	if (pinned != b->npages) {
		unpin_user_pages(b->pages, pinned);
		kvfree(b->pages);
		b->pages = NULL;
		return -EFAULT;
	}
	ret = sg_alloc_table_from_pages(&b->sgt, b->pages, b->npages, offset_in_page(uaddr), len,
					GFP_KERNEL);
	if (ret)
		goto fail;
	ret = dma_map_sgtable(&nd->pdev->dev, &b->sgt, dir, 0);
	if (ret)
		goto fail;
	b->mapped = true;
	return 0;
fail:
	netgpu_buf_release(nd, b);
	return ret;
}

static void netgpu_slot_release(struct netgpu_dev *nd, struct netgpu_slot *s)
{
	unsigned int i;

	for (i = 0; i < s->nbufs; i++)
		netgpu_buf_release(nd, &s->bufs[i]);
	if (s->table)
		dma_free_coherent(&nd->pdev->dev, s->table_size, s->table, s->table_dma);
	s->table = NULL;
	s->nbufs = 0;
}

static void netgpu_batch_free(struct netgpu_dev *nd, struct netgpu_batch *b)
{
	u32 i;

	if (!b)
		return;
	for (i = 0; i < b->count; i++)
		netgpu_slot_release(nd, &b->slots[i]);
	kvfree(b);
}

/*
 * The data buffers an opcode takes, in order: the direction of each. Opcodes not listed here
 * are refused (-EINVAL), so user space can only ask for what the device defines.
 */
static int netgpu_op_buffers(u16 op, enum dma_data_direction dirs[2])
{
	switch (op) {
	case NETGPU_OP_NOP:
	case NETGPU_OP_MEM_GET_INFO:
	case NETGPU_OP_CTX_CREATE:
	case NETGPU_OP_CTX_DESTROY:
	case NETGPU_OP_CTX_SYNCHRONIZE:
	case NETGPU_OP_MEM_ALLOC:
	case NETGPU_OP_MEM_FREE:
	case NETGPU_OP_MEMCPY_DTOD:
	case NETGPU_OP_MEMSET:
	case NETGPU_OP_MODULE_UNLOAD:
	case NETGPU_OP_STREAM_CREATE:
	case NETGPU_OP_STREAM_DESTROY:
	case NETGPU_OP_STREAM_SYNCHRONIZE:
	case NETGPU_OP_STREAM_QUERY:
	case NETGPU_OP_EVENT_CREATE:
	case NETGPU_OP_EVENT_RECORD:
	case NETGPU_OP_EVENT_SYNCHRONIZE:
	case NETGPU_OP_EVENT_QUERY:
	case NETGPU_OP_EVENT_ELAPSED_TIME:
	case NETGPU_OP_EVENT_DESTROY:
		return 0;
	case NETGPU_OP_MEMCPY_HTOD:
	case NETGPU_OP_MODULE_LOAD:
	case NETGPU_OP_MODULE_GET_GLOBAL:
	case NETGPU_OP_LAUNCH_KERNEL:
		dirs[0] = DMA_TO_DEVICE;
		return 1;
	case NETGPU_OP_DEVICE_QUERY:
	case NETGPU_OP_MEMCPY_DTOH:
		dirs[0] = DMA_FROM_DEVICE;
		return 1;
	case NETGPU_OP_MODULE_GET_FUNCTION:
		dirs[0] = DMA_TO_DEVICE;
		dirs[1] = DMA_FROM_DEVICE;
		return 2;
	default:
		return -EINVAL;
	}
}

/*
 * Checks a user descriptor, pins its buffers, and rewrites @cmd's scatter list into DMA
 * addresses (inline, or an indirect table).
 */
static int netgpu_prepare(struct netgpu_dev *nd, struct netgpu_command *cmd,
			  struct netgpu_slot *s)
{
	enum dma_data_direction dirs[2];
	struct netgpu_sg_entry user[2];
	struct scatterlist *sg;
	unsigned int nsegs = 0, i, k;
	u64 total = 0;
	int nbufs, ret;

	nbufs = netgpu_op_buffers(le16_to_cpu(cmd->opcode), dirs);
	if (nbufs < 0)
		return nbufs;
	if (le16_to_cpu(cmd->flags) & ~NETGPU_CMD_FLAG_ASYNC)
		return -EINVAL;
	if (cmd->reserved || le32_to_cpu(cmd->sg_count) != nbufs)
		return -EINVAL;
	for (i = 0; i < nbufs; i++) {
		user[i] = cmd->sg[i];
		if (user[i].flags)
			return -EINVAL;
		total += le32_to_cpu(user[i].len);
	}
	if (total > nd->max_transfer)
		return -E2BIG;
	for (i = 0; i < nbufs; i++) {
		ret = netgpu_buf_pin(nd, &s->bufs[i], le64_to_cpu(user[i].addr),
				     le32_to_cpu(user[i].len), dirs[i]);
		if (ret)
			return ret;
		s->nbufs = i + 1;
		if (s->bufs[i].mapped)
			nsegs += s->bufs[i].sgt.nents;
	}
	if (nsegs > nd->max_sg)
		return -E2BIG;
	memset(cmd->sg, 0, sizeof(cmd->sg));
	cmd->sg_count = cpu_to_le32(nsegs);
	if (nsegs <= NETGPU_INLINE_SG_ENTRIES) {
		k = 0;
		for (i = 0; i < s->nbufs; i++) {
			if (!s->bufs[i].mapped)
				continue;
			for_each_sgtable_dma_sg(&s->bufs[i].sgt, sg, ret) {
				cmd->sg[k].addr = cpu_to_le64(sg_dma_address(sg));
				cmd->sg[k].len = cpu_to_le32(sg_dma_len(sg));
				k++;
			}
		}
		return 0;
	}
	s->table_size = nsegs * sizeof(struct netgpu_sg_entry);
	s->table = dma_alloc_coherent(&nd->pdev->dev, s->table_size, &s->table_dma, GFP_KERNEL);
	if (!s->table)
		return -ENOMEM;
	k = 0;
	for (i = 0; i < s->nbufs; i++) {
		if (!s->bufs[i].mapped)
			continue;
		for_each_sgtable_dma_sg(&s->bufs[i].sgt, sg, ret) {
			s->table[k].addr = cpu_to_le64(sg_dma_address(sg));
			s->table[k].len = cpu_to_le32(sg_dma_len(sg));
			s->table[k].flags = 0;
			k++;
		}
	}
	cmd->flags |= cpu_to_le16(NETGPU_CMD_FLAG_SG_INDIRECT);
	cmd->sg[0].addr = cpu_to_le64(s->table_dma);
	cmd->sg[0].len = cpu_to_le32(s->table_size);
	return 0;
}

/* ---------------------------------------------------------------- completions */

/* Consumes new completions; returns true if any arrived. Any context. */
static bool netgpu_process_cq(struct netgpu_queue *q)
{
	struct netgpu_batch *b;
	unsigned long flags;
	bool progress = false;

	spin_lock_irqsave(&q->lock, flags);
	b = q->batch;
	for (;;) {
		struct netgpu_completion *c = &q->cq[q->cq_head];
		u16 f = le16_to_cpu(READ_ONCE(c->flags));
		u32 cid;

		if ((f & NETGPU_CQE_FLAG_PHASE) != q->phase)
			break;
		dma_rmb();
		cid = le32_to_cpu(c->cid);
		if (b && cid < b->count && !b->slots[cid].done) {
			b->slots[cid].cpl = *c;
			b->slots[cid].done = true;
			b->remaining--;
		}
		q->cq_head = (q->cq_head + 1) % q->size;
		if (q->cq_head == 0)
			q->phase ^= 1;
		progress = true;
	}
	spin_unlock_irqrestore(&q->lock, flags);
	if (progress)
		wake_up(&q->wq);
	return progress;
}

static irqreturn_t netgpu_vector_irq(int irq, void *data)
{
	struct netgpu_dev *nd = data;
	unsigned int i;
	int v;

	for (v = 0; v < nd->nvec - 1 && nd->irqs[v] != irq; v++)
		;

	if (v == 0 || !nd->msix) {
		wake_up(&nd->event_wq);
		if (nd->msix)
			return IRQ_HANDLED;
	}
	spin_lock(&nd->qlock);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		struct netgpu_queue *q = nd->queues[i];

		if (q && (!nd->msix || q->vector == v))
			netgpu_process_cq(q);
	}
	spin_unlock(&nd->qlock);
	return IRQ_HANDLED;
}

static irqreturn_t netgpu_intx_irq(int irq, void *data)
{
	struct netgpu_dev *nd = data;

	/* INTR_STATUS is read-to-clear; 0 means the shared line was someone else's. */
	if (!rd32(nd, NETGPU_REG_INTR_STATUS))
		return IRQ_NONE;
	return netgpu_vector_irq(irq, data);
}

/* ---------------------------------------------------------------- queues */

static bool netgpu_queue_stopped(struct netgpu_dev *nd, u16 qid)
{
	return !(rd32(nd, qreg(qid, NETGPU_QREG_STATUS)) & NETGPU_QSTATUS_ENABLED);
}

/*
 * Disables the queue and waits until the device no longer touches its rings or any buffer.
 * Returns false if the device did not confirm in time: the caller must then leak the memory
 * rather than free it under a device that may still write to it.
 */
static bool netgpu_queue_stop(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;
	unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_STOP_TIMEOUT_MS);
	bool ok = true;

	down_read(&nd->io_sem);
	if (!nd->dead) {
		wr32(nd, qreg(q->qid, NETGPU_QREG_ENABLE), 0);
		while (!netgpu_queue_stopped(nd, q->qid)) {
			if (time_after(jiffies, deadline)) {
				ok = false;
				break;
			}
			msleep(1);
		}
	}
	up_read(&nd->io_sem);
	if (!ok)
		dev_err(&nd->pdev->dev, "queue %u did not stop; leaking its memory\n", q->qid);
	return ok;
}

static void netgpu_queue_free(struct netgpu_queue *q, bool device_stopped)
{
	struct netgpu_dev *nd = q->ndev;
	unsigned long flags;

	spin_lock_irqsave(&nd->qlock, flags);
	if (nd->queues[q->qid] == q)
		nd->queues[q->qid] = NULL;
	spin_unlock_irqrestore(&nd->qlock, flags);
	if (device_stopped) {
		netgpu_batch_free(nd, q->batch);
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*q->sq), q->sq, q->sq_dma);
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*q->cq), q->cq, q->cq_dma);
	}
	kfree(q);
}

static int netgpu_wait_ready(struct netgpu_dev *nd)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_READY_TIMEOUT_MS);
	u32 st;

	for (;;) {
		down_read(&nd->io_sem);
		st = nd->dead ? 0 : rd32(nd, NETGPU_REG_STATUS);
		up_read(&nd->io_sem);
		if (nd->dead)
			return -ENODEV;
		if (st & NETGPU_STATUS_FATAL)
			return -EIO;
		if ((st & NETGPU_STATUS_READY) && !(st & NETGPU_STATUS_RESETTING))
			return 0;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		if (wait_event_interruptible_timeout(nd->event_wq, nd->dead,
						     msecs_to_jiffies(NETGPU_POLL_MS)) < 0)
			return -ERESTARTSYS;
	}
}

static struct netgpu_queue *netgpu_queue_create(struct netgpu_dev *nd)
{
	struct netgpu_queue *q;
	unsigned long flags;
	int qid = -1, i, ret;
	u32 st;

	q = kzalloc(sizeof(*q), GFP_KERNEL);
	if (!q)
		return ERR_PTR(-ENOMEM);
	q->ndev = nd;
	q->size = NETGPU_QUEUE_SIZE;
	q->phase = 1;
	spin_lock_init(&q->lock);
	init_waitqueue_head(&q->wq);
	mutex_init(&q->submit_lock);
	q->sq = dma_alloc_coherent(&nd->pdev->dev, q->size * sizeof(*q->sq), &q->sq_dma, GFP_KERNEL);
	q->cq = dma_alloc_coherent(&nd->pdev->dev, q->size * sizeof(*q->cq), &q->cq_dma, GFP_KERNEL);
	if (!q->sq || !q->cq) {
		ret = -ENOMEM;
		goto fail;
	}
	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < nd->max_queues; i++) {
		if (!nd->queues[i]) {
			qid = i;
			nd->queues[i] = q;
			break;
		}
	}
	spin_unlock_irqrestore(&nd->qlock, flags);
	if (qid < 0) {
		ret = -EBUSY;
		goto fail;
	}
	q->qid = qid;
	q->vector = nd->msix ? 1 + (qid % (nd->nvec - 1)) : 1 + qid;
	down_read(&nd->io_sem);
	if (nd->dead) {
		up_read(&nd->io_sem);
		ret = -ENODEV;
		goto fail_slot;
	}
	wr64(nd, qreg(qid, NETGPU_QREG_SQ_BASE), q->sq_dma);
	wr64(nd, qreg(qid, NETGPU_QREG_CQ_BASE), q->cq_dma);
	wr32(nd, qreg(qid, NETGPU_QREG_SIZE), q->size);
	wr32(nd, qreg(qid, NETGPU_QREG_MSIX_VECTOR), q->vector);
	wr32(nd, qreg(qid, NETGPU_QREG_COALESCE_USECS), 0);
	wr32(nd, qreg(qid, NETGPU_QREG_COALESCE_COUNT), 0);
	wr32(nd, qreg(qid, NETGPU_QREG_ENABLE), 1);
	st = rd32(nd, qreg(qid, NETGPU_QREG_STATUS));
	if (st != NETGPU_QSTATUS_ENABLED) {
		dev_warn(&nd->pdev->dev, "queue %d refused: status %#x error %u\n", qid, st,
			 rd32(nd, qreg(qid, NETGPU_QREG_ERROR)));
		wr32(nd, qreg(qid, NETGPU_QREG_ENABLE), 0);
		up_read(&nd->io_sem);
		ret = -EIO;
		goto fail_slot;
	}
	up_read(&nd->io_sem);
	return q;
fail_slot:
	spin_lock_irqsave(&nd->qlock, flags);
	nd->queues[qid] = NULL;
	spin_unlock_irqrestore(&nd->qlock, flags);
fail:
	if (q->sq)
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*q->sq), q->sq, q->sq_dma);
	if (q->cq)
		dma_free_coherent(&nd->pdev->dev, q->size * sizeof(*q->cq), q->cq, q->cq_dma);
	kfree(q);
	return ERR_PTR(ret);
}

/* Is the queue unusable (device error, fatal status, removal)? Updates q->broken. */
static bool netgpu_queue_check(struct netgpu_queue *q)
{
	struct netgpu_dev *nd = q->ndev;

	if (q->broken)
		return true;
	down_read(&nd->io_sem);
	if (nd->dead ||
	    (rd32(nd, qreg(q->qid, NETGPU_QREG_STATUS)) & NETGPU_QSTATUS_ERROR) ||
	    (rd32(nd, NETGPU_REG_STATUS) & NETGPU_STATUS_FATAL))
		q->broken = true;
	up_read(&nd->io_sem);
	return q->broken;
}

static long netgpu_submit(struct netgpu_queue *q, struct netgpu_ioc_submit __user *uarg)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_ioc_submit req;
	struct netgpu_ioc_cmd __user *ucmds;
	struct netgpu_batch *b;
	unsigned long flags;
	long ret = 0;
	u32 i;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.flags || req.count == 0 || req.count > NETGPU_MAX_BATCH || req.count >= q->size)
		return -EINVAL;
	ucmds = u64_to_user_ptr(req.cmds);
	if (mutex_lock_killable(&q->submit_lock))
		return -EINTR;
	if (q->batch) {
		/* Only a broken queue keeps a batch across calls: it can never finish. */
		ret = -EIO;
		goto unlock;
	}
	if (netgpu_queue_check(q)) {
		ret = -EIO;
		goto unlock;
	}
	b = kvzalloc(struct_size(b, slots, req.count), GFP_KERNEL);
	if (!b) {
		ret = -ENOMEM;
		goto unlock;
	}
	b->count = req.count;
	b->remaining = req.count;
	for (i = 0; i < req.count; i++) {
		struct netgpu_command cmd;

		BUILD_BUG_ON(sizeof(cmd) != sizeof(ucmds[i].desc));
		if (copy_from_user(&cmd, ucmds[i].desc, sizeof(cmd))) {
			ret = -EFAULT;
			goto free;
		}
		ret = netgpu_prepare(nd, &cmd, &b->slots[i]);
		if (ret)
			goto free;
		cmd.cid = cpu_to_le32(i);
		q->sq[(q->sq_tail + i) % q->size] = cmd;
	}
	spin_lock_irqsave(&q->lock, flags);
	q->batch = b;
	spin_unlock_irqrestore(&q->lock, flags);
	q->sq_tail = (q->sq_tail + req.count) % q->size;
	down_read(&nd->io_sem);
	if (!nd->dead) {
		/* writel orders the descriptor stores above before the doorbell. */
		wr32(nd, NETGPU_REG_DOORBELL_BASE + q->qid * NETGPU_REG_DOORBELL_STRIDE, q->sq_tail);
	}
	up_read(&nd->io_sem);

	/*
	 * Wait for every completion. Interrupts wake us; the periodic poll also catches a lost
	 * interrupt and notices a device error. Only a fatal signal ends the wait early (the
	 * process is dying, and release() then stops the queue before unpinning): an ordinary
	 * signal cannot, because restarting the call would submit the batch twice.
	 */
	for (;;) {
		long w = wait_event_killable_timeout(q->wq, READ_ONCE(b->remaining) == 0,
						     msecs_to_jiffies(NETGPU_POLL_MS));
		if (w < 0) {
			ret = -EINTR;
			goto unlock;	/* the batch stays in flight; release() reaps it */
		}
		if (READ_ONCE(b->remaining) == 0)
			break;
		if (netgpu_process_cq(q))
			continue;
		if (netgpu_queue_check(q)) {
			ret = -EIO;
			goto unlock;
		}
	}
	for (i = 0; i < b->count; i++) {
		if (copy_to_user(ucmds[i].cpl, &b->slots[i].cpl, sizeof(b->slots[i].cpl)))
			ret = -EFAULT;
	}
	spin_lock_irqsave(&q->lock, flags);
	q->batch = NULL;
	spin_unlock_irqrestore(&q->lock, flags);
free:
	netgpu_batch_free(nd, b);
unlock:
	mutex_unlock(&q->submit_lock);
	return ret;
}

static long netgpu_info(struct netgpu_queue *q, void __user *uarg)
{
	struct netgpu_dev *nd = q->ndev;
	struct netgpu_ioc_info info = {};
	int i;

	info.uapi_version = NETGPU_UAPI_VERSION;
	info.queue = q->qid;
	down_read(&nd->io_sem);
	if (nd->dead) {
		up_read(&nd->io_sem);
		return -ENODEV;
	}
	info.abi_version = rd32(nd, NETGPU_REG_VERSION);
	info.status = rd32(nd, NETGPU_REG_STATUS);
	info.fatal_reason = rd32(nd, NETGPU_REG_FATAL_REASON);
	info.executor = rd32(nd, NETGPU_REG_GPU_EXECUTOR);
	info.compute_capability = rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY);
	info.sm_count = rd32(nd, NETGPU_REG_GPU_SM_COUNT);
	info.driver_version = rd32(nd, NETGPU_REG_GPU_DRIVER_VERSION);
	info.total_mem = rd64(nd, NETGPU_REG_GPU_TOTAL_MEM);
	info.memory_quota = rd64(nd, NETGPU_REG_MEMORY_QUOTA);
	for (i = 0; i < 16; i += 4)
		put_unaligned_le32(rd32(nd, NETGPU_REG_GPU_UUID + i), &info.uuid[i]);
	for (i = 0; i < NETGPU_GPU_NAME_LEN; i += 4)
		put_unaligned_le32(rd32(nd, NETGPU_REG_GPU_NAME + i), &info.name[i]);
	up_read(&nd->io_sem);
	info.name[sizeof(info.name) - 1] = 0;
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

/* ---------------------------------------------------------------- file operations */

static int netgpu_open(struct inode *inode, struct file *file)
{
	struct netgpu_dev *nd;
	struct netgpu_queue *q;
	int ret;

	mutex_lock(&netgpu_idr_lock);
	nd = idr_find(&netgpu_idr, iminor(inode));
	if (nd)
		kref_get(&nd->ref);
	mutex_unlock(&netgpu_idr_lock);
	if (!nd)
		return -ENODEV;
	ret = netgpu_wait_ready(nd);
	if (ret)
		goto put;
	q = netgpu_queue_create(nd);
	if (IS_ERR(q)) {
		ret = PTR_ERR(q);
		goto put;
	}
	file->private_data = q;
	return 0;
put:
	kref_put(&nd->ref, netgpu_dev_release);
	return ret;
}

static int netgpu_release(struct inode *inode, struct file *file)
{
	struct netgpu_queue *q = file->private_data;
	struct netgpu_dev *nd = q->ndev;
	bool stopped;

	stopped = netgpu_queue_stop(q);
	/* The device no longer writes the CQ: take what it posted, then free. */
	netgpu_queue_free(q, stopped);
	kref_put(&nd->ref, netgpu_dev_release);
	return 0;
}

static long netgpu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct netgpu_queue *q = file->private_data;

	switch (cmd) {
	case NETGPU_IOC_SUBMIT:
		return netgpu_submit(q, (void __user *)arg);
	case NETGPU_IOC_INFO:
		return netgpu_info(q, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations netgpu_fops = {
	.owner = THIS_MODULE,
	.open = netgpu_open,
	.release = netgpu_release,
	.unlocked_ioctl = netgpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---------------------------------------------------------------- sysfs */

static struct netgpu_dev *to_ndev(struct device *dev)
{
	return dev_get_drvdata(dev);
}

static ssize_t gpu_name_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);
	char name[NETGPU_GPU_NAME_LEN + 1] = {};
	int i;

	down_read(&nd->io_sem);
	if (!nd->dead)
		for (i = 0; i < NETGPU_GPU_NAME_LEN; i += 4)
			put_unaligned_le32(rd32(nd, NETGPU_REG_GPU_NAME + i), &name[i]);
	up_read(&nd->io_sem);
	return sysfs_emit(buf, "%s\n", name);
}
static DEVICE_ATTR_RO(gpu_name);

#define NETGPU_REG_ATTR(attr_name, fmt, ...)						\
static ssize_t attr_name##_show(struct device *dev, struct device_attribute *attr,	\
				char *buf)						\
{											\
	struct netgpu_dev *nd = to_ndev(dev);						\
	ssize_t n = -ENODEV;								\
	down_read(&nd->io_sem);								\
	if (!nd->dead)									\
		n = sysfs_emit(buf, fmt "\n", __VA_ARGS__);				\
	up_read(&nd->io_sem);								\
	return n;									\
}											\
static DEVICE_ATTR_RO(attr_name)

NETGPU_REG_ATTR(total_mem, "%llu", rd64(nd, NETGPU_REG_GPU_TOTAL_MEM));
NETGPU_REG_ATTR(memory_quota, "%llu", rd64(nd, NETGPU_REG_MEMORY_QUOTA));
NETGPU_REG_ATTR(sm_count, "%u", rd32(nd, NETGPU_REG_GPU_SM_COUNT));
NETGPU_REG_ATTR(driver_version, "%u", rd32(nd, NETGPU_REG_GPU_DRIVER_VERSION));
NETGPU_REG_ATTR(compute_capability, "%u.%u", rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY) >> 16,
		rd32(nd, NETGPU_REG_GPU_COMPUTE_CAPABILITY) & 0xffff);
NETGPU_REG_ATTR(abi_version, "%u.%u", rd32(nd, NETGPU_REG_VERSION) >> 16,
		rd32(nd, NETGPU_REG_VERSION) & 0xffff);

static ssize_t executor_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	static const char *const names[] = { "none", "cuda", "cpu" };
	struct netgpu_dev *nd = to_ndev(dev);
	u32 e = 0;

	down_read(&nd->io_sem);
	if (!nd->dead)
		e = rd32(nd, NETGPU_REG_GPU_EXECUTOR);
	up_read(&nd->io_sem);
	return sysfs_emit(buf, "%s\n", e < ARRAY_SIZE(names) ? names[e] : "unknown");
}
static DEVICE_ATTR_RO(executor);

static ssize_t link_state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	static const char *const reasons[] = { "internal", "backend unreachable",
		"backend refused the token", "backend session lost", "incompatible backend",
		"internal" };
	struct netgpu_dev *nd = to_ndev(dev);
	u32 st, why = 0;

	down_read(&nd->io_sem);
	if (nd->dead) {
		up_read(&nd->io_sem);
		return sysfs_emit(buf, "removed\n");
	}
	st = rd32(nd, NETGPU_REG_STATUS);
	if (st & NETGPU_STATUS_FATAL)
		why = rd32(nd, NETGPU_REG_FATAL_REASON);
	up_read(&nd->io_sem);
	if (st & NETGPU_STATUS_FATAL)
		return sysfs_emit(buf, "fatal: %s\n", reasons[why < ARRAY_SIZE(reasons) ? why : 0]);
	if (st & NETGPU_STATUS_RESETTING)
		return sysfs_emit(buf, "resetting\n");
	if (st & NETGPU_STATUS_READY)
		return sysfs_emit(buf, "up\n");
	return sysfs_emit(buf, "connecting\n");
}
static DEVICE_ATTR_RO(link_state);

static ssize_t queues_in_use_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);
	unsigned long flags;
	int i, n = 0;

	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++)
		n += nd->queues[i] != NULL;
	spin_unlock_irqrestore(&nd->qlock, flags);
	return sysfs_emit(buf, "%d\n", n);
}
static DEVICE_ATTR_RO(queues_in_use);

static ssize_t irq_mode_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct netgpu_dev *nd = to_ndev(dev);

	return sysfs_emit(buf, "%s %d\n", nd->msix ? "msix" : "intx", nd->nvec);
}
static DEVICE_ATTR_RO(irq_mode);

static struct attribute *netgpu_attrs[] = {
	&dev_attr_gpu_name.attr,
	&dev_attr_total_mem.attr,
	&dev_attr_memory_quota.attr,
	&dev_attr_sm_count.attr,
	&dev_attr_driver_version.attr,
	&dev_attr_compute_capability.attr,
	&dev_attr_abi_version.attr,
	&dev_attr_executor.attr,
	&dev_attr_link_state.attr,
	&dev_attr_queues_in_use.attr,
	&dev_attr_irq_mode.attr,
	NULL,
};
ATTRIBUTE_GROUPS(netgpu);

/* ---------------------------------------------------------------- PCI */

static int netgpu_setup_irqs(struct netgpu_dev *nd)
{
	struct pci_dev *pdev = nd->pdev;
	int i, ret;

	nd->nvec = msix ? pci_alloc_irq_vectors(pdev, 2, NETGPU_MSIX_VECTORS, PCI_IRQ_MSIX) : -ENOSPC;
	if (nd->nvec >= 2) {
		nd->msix = true;
		for (i = 0; i < nd->nvec; i++)
			nd->irqs[i] = pci_irq_vector(pdev, i);
		for (i = 0; i < nd->nvec; i++) {
			ret = request_irq(nd->irqs[i], netgpu_vector_irq, 0, DRV_NAME, nd);
			if (ret)
				goto fail;
		}
		return 0;
	}
	nd->nvec = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX);
	if (nd->nvec < 1)
		return nd->nvec ? nd->nvec : -ENODEV;
	nd->msix = false;
	nd->irqs[0] = pci_irq_vector(pdev, 0);
	return request_irq(nd->irqs[0], netgpu_intx_irq, IRQF_SHARED, DRV_NAME, nd);
fail:
	while (--i >= 0)
		free_irq(nd->irqs[i], nd);
	pci_free_irq_vectors(pdev);
	return ret;
}

static void netgpu_free_irqs(struct netgpu_dev *nd)
{
	int i;

	for (i = 0; i < nd->nvec; i++)
		free_irq(nd->irqs[i], nd);
	pci_free_irq_vectors(nd->pdev);
}

static int netgpu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct netgpu_dev *nd;
	u32 magic, version;
	int ret;

	nd = kzalloc(sizeof(*nd), GFP_KERNEL);
	if (!nd)
		return -ENOMEM;
	kref_init(&nd->ref);
	init_rwsem(&nd->io_sem);
	spin_lock_init(&nd->qlock);
	init_waitqueue_head(&nd->event_wq);
	nd->pdev = pci_dev_get(pdev);
	nd->minor = -1;

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto put;
	ret = pci_request_mem_regions(pdev, DRV_NAME);
	if (ret)
		goto disable;
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto release;
	nd->regs = pci_iomap(pdev, NETGPU_REGS_BAR, NETGPU_REGS_BAR_SIZE);
	if (!nd->regs) {
		ret = -ENOMEM;
		goto release;
	}
	magic = rd32(nd, NETGPU_REG_MAGIC);
	version = rd32(nd, NETGPU_REG_VERSION);
	if (magic != NETGPU_MAGIC || (version >> 16) != NETGPU_ABI_VERSION_MAJOR) {
		dev_err(&pdev->dev, "not a netgpu ABI %u device (magic %#x, version %#x)\n",
			NETGPU_ABI_VERSION_MAJOR, magic, version);
		ret = -ENODEV;
		goto unmap;
	}
	pci_set_master(pdev);
	nd->max_queues = min_t(u32, rd32(nd, NETGPU_REG_MAX_QUEUES), NETGPU_MAX_QUEUES);
	nd->max_sg = min_t(u32, rd32(nd, NETGPU_REG_MAX_SG_ENTRIES), NETGPU_MAX_SG_ENTRIES);
	nd->max_transfer = min_t(u32, rd32(nd, NETGPU_REG_MAX_TRANSFER), NETGPU_MAX_TRANSFER);
	nd->features = rd64(nd, NETGPU_REG_DEVICE_FEATURES) &
		       (NETGPU_FEATURE_SG_INDIRECT | NETGPU_FEATURE_ASYNC |
			NETGPU_FEATURE_INTR_COALESCING);
	if (!(nd->features & NETGPU_FEATURE_SG_INDIRECT))
		nd->max_sg = min_t(u32, nd->max_sg, NETGPU_INLINE_SG_ENTRIES);
	wr64(nd, NETGPU_REG_DRIVER_FEATURES, nd->features);
	if (nd->max_queues == 0) {
		ret = -ENODEV;
		goto unmap;
	}
	ret = netgpu_setup_irqs(nd);
	if (ret)
		goto unmap;
	wr32(nd, NETGPU_REG_EVENT_VECTOR, 0);

	mutex_lock(&netgpu_idr_lock);
	ret = idr_alloc(&netgpu_idr, NULL, 0, NETGPU_MAX_DEVICES, GFP_KERNEL);
	mutex_unlock(&netgpu_idr_lock);
	if (ret < 0)
		goto irqs;
	nd->minor = ret;
	pci_set_drvdata(pdev, nd);
	nd->dev = device_create(netgpu_class, &pdev->dev, MKDEV(MAJOR(netgpu_devt), nd->minor),
				nd, "netgpu%d", nd->minor);
	if (IS_ERR(nd->dev)) {
		ret = PTR_ERR(nd->dev);
		goto minor;
	}
	mutex_lock(&netgpu_idr_lock);
	idr_replace(&netgpu_idr, nd, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
	dev_info(&pdev->dev, "netgpu%d: ABI %u.%u, %u queues, %s, %d vectors\n", nd->minor,
		 version >> 16, version & 0xffff, nd->max_queues, nd->msix ? "MSI-X" : "INTx",
		 nd->nvec);
	return 0;
minor:
	mutex_lock(&netgpu_idr_lock);
	idr_remove(&netgpu_idr, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
irqs:
	netgpu_free_irqs(nd);
unmap:
	pci_iounmap(pdev, nd->regs);
release:
	pci_release_mem_regions(pdev);
disable:
	pci_disable_device(pdev);
put:
	kref_put(&nd->ref, netgpu_dev_release);
	return ret;
}

/* Hot-unplug or driver unbind: open files stay valid but every call fails with -EIO/-ENODEV. */
static void netgpu_remove(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);
	unsigned long flags;
	int i;

	/* No new opens from here on; open files keep their reference to nd. */
	mutex_lock(&netgpu_idr_lock);
	idr_remove(&netgpu_idr, nd->minor);
	mutex_unlock(&netgpu_idr_lock);
	device_destroy(netgpu_class, MKDEV(MAJOR(netgpu_devt), nd->minor));
	netgpu_free_irqs(nd);
	down_write(&nd->io_sem);
	/*
	 * Stop every queue and wait until each has quiesced, so nothing DMAs into memory that
	 * open files will free. A surprise-removed device reads all ones: nothing to wait for.
	 */
	for (i = 0; i < nd->max_queues; i++)
		wr32(nd, qreg(i, NETGPU_QREG_ENABLE), 0);
	for (i = 0; i < nd->max_queues; i++) {
		unsigned long deadline = jiffies + msecs_to_jiffies(NETGPU_STOP_TIMEOUT_MS);
		u32 st;

		while ((st = rd32(nd, qreg(i, NETGPU_QREG_STATUS))) != ~0u &&
		       (st & NETGPU_QSTATUS_ENABLED) && time_before(jiffies, deadline))
			msleep(1);
	}
	nd->dead = true;
	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		if (nd->queues[i]) {
			nd->queues[i]->broken = true;
			wake_up(&nd->queues[i]->wq);
		}
	}
	spin_unlock_irqrestore(&nd->qlock, flags);
	pci_iounmap(pdev, nd->regs);
	up_write(&nd->io_sem);
	wake_up(&nd->event_wq);
	pci_clear_master(pdev);
	pci_release_mem_regions(pdev);
	pci_disable_device(pdev);
	kref_put(&nd->ref, netgpu_dev_release);
}

/* Function-level reset (e.g. /sys/bus/pci/devices/.../reset): the device drops every queue. */
static void netgpu_reset_prepare(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);
	unsigned long flags;
	int i;

	spin_lock_irqsave(&nd->qlock, flags);
	for (i = 0; i < NETGPU_MAX_QUEUES; i++) {
		if (nd->queues[i]) {
			nd->queues[i]->broken = true;
			wake_up(&nd->queues[i]->wq);
		}
	}
	spin_unlock_irqrestore(&nd->qlock, flags);
}

static void netgpu_reset_done(struct pci_dev *pdev)
{
	struct netgpu_dev *nd = pci_get_drvdata(pdev);

	down_read(&nd->io_sem);
	if (!nd->dead) {
		wr64(nd, NETGPU_REG_DRIVER_FEATURES, nd->features);
		wr32(nd, NETGPU_REG_EVENT_VECTOR, 0);
	}
	up_read(&nd->io_sem);
}

static const struct pci_error_handlers netgpu_err_handlers = {
	.reset_prepare = netgpu_reset_prepare,
	.reset_done = netgpu_reset_done,
};

static const struct pci_device_id netgpu_ids[] = {
	{ PCI_DEVICE(NETGPU_VENDOR_ID, NETGPU_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, netgpu_ids);

static struct pci_driver netgpu_driver = {
	.name = DRV_NAME,
	.id_table = netgpu_ids,
	.probe = netgpu_probe,
	.remove = netgpu_remove,
	.err_handler = &netgpu_err_handlers,
};

static int __init netgpu_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&netgpu_devt, 0, NETGPU_MAX_DEVICES, DRV_NAME);
	if (ret)
		return ret;
	cdev_init(&netgpu_cdev, &netgpu_fops);
	netgpu_cdev.owner = THIS_MODULE;
	ret = cdev_add(&netgpu_cdev, netgpu_devt, NETGPU_MAX_DEVICES);
	if (ret)
		goto region;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	netgpu_class = class_create(DRV_NAME);
#else
	netgpu_class = class_create(THIS_MODULE, DRV_NAME);
#endif
	if (IS_ERR(netgpu_class)) {
		ret = PTR_ERR(netgpu_class);
		goto cdev;
	}
	netgpu_class->dev_groups = netgpu_groups;
	ret = pci_register_driver(&netgpu_driver);
	if (ret)
		goto class;
	return 0;
class:
	class_destroy(netgpu_class);
cdev:
	cdev_del(&netgpu_cdev);
region:
	unregister_chrdev_region(netgpu_devt, NETGPU_MAX_DEVICES);
	return ret;
}

static void __exit netgpu_exit(void)
{
	pci_unregister_driver(&netgpu_driver);
	class_destroy(netgpu_class);
	cdev_del(&netgpu_cdev);
	unregister_chrdev_region(netgpu_devt, NETGPU_MAX_DEVICES);
	idr_destroy(&netgpu_idr);
}

module_init(netgpu_init);
module_exit(netgpu_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("netgpu");
MODULE_DESCRIPTION("netgpu virtual GPU guest driver");
MODULE_VERSION("0.1.0");
