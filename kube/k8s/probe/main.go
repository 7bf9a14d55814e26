// Command kha-probe stands in for real Kubernetes clients during failover drills: an open-loop
// request loop (GET, create and update of ConfigMaps carrying a sequence number), a raw watch
// that reconnects at once and an informer, all on one clientset (one HTTP/2 transport, as a
// controller has), each result and event logged as a JSON line stamped with CLOCK_MONOTONIC.
// The output format is written down in kube/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	label    = "kha-probe"
	selector = label + "=1"
	// A failed Watch call (nothing listening, say) is retried after this pause, so that a dead
	// endpoint is not hammered; a watch that closes or ends in an error reconnects without one.
	watchRetry = 50 * time.Millisecond
	setupRetry = 200 * time.Millisecond
)

type options struct {
	kubeconfig, namespace  string
	rate                   float64
	timeout, duration      time.Duration
	keys                   int
	requests, raw, informs bool
}

func parseOptions(args []string) (options, error) {
	var o options
	var noRequests, noWatch, noInformer bool
	fs := flag.NewFlagSet("kha-probe", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // main prints the error once; -h prints the flags to stdout
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (required)")
	fs.StringVar(&o.namespace, "namespace", "kha-probe", "namespace of the probe's ConfigMaps (created if missing)")
	fs.Float64Var(&o.rate, "rate", 20, "requests started per second (open loop)")
	fs.DurationVar(&o.timeout, "timeout", time.Second, "each request's timeout")
	fs.IntVar(&o.keys, "keys", 8, "how many probe-key-<i> ConfigMaps GET and update cycle through")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	fs.BoolVar(&noRequests, "no-requests", false, "no request loop")
	fs.BoolVar(&noWatch, "no-watch", false, "no raw watch")
	fs.BoolVar(&noInformer, "no-informer", false, "no informer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
		}
		return o, err
	}
	o.requests, o.raw, o.informs = !noRequests, !noWatch, !noInformer
	switch {
	case o.kubeconfig == "":
		return o, errors.New("--kubeconfig: required")
	case o.rate <= 0:
		return o, fmt.Errorf("--rate %v: must be above 0", o.rate)
	case o.timeout <= 0:
		return o, fmt.Errorf("--timeout %v: must be above 0", o.timeout)
	case o.keys < 1:
		return o, fmt.Errorf("--keys %d: must be 1 or more", o.keys)
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

// monotonic is CLOCK_MONOTONIC in seconds: Python's time.monotonic() reads the same clock.
func monotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// The lines the probe prints, in kube/README.md's field order; each gets "t" in front.
type (
	requestLine struct {
		Kind  string  `json:"kind"`
		Op    string  `json:"op"`
		Seq   int64   `json:"seq"`
		Start float64 `json:"s"`
		End   float64 `json:"e"`
		OK    bool    `json:"ok"`
		Code  int     `json:"code"`
		Err   *string `json:"err"`
		RV    *string `json:"rv"`
		Key   string  `json:"key"`
	}
	eventLine struct {
		Kind    string `json:"kind"`
		Watcher string `json:"watcher"`
		Type    string `json:"type"`
		Name    string `json:"name"`
		Seq     int64  `json:"seq"`
		RV      string `json:"rv"`
	}
	watchLine struct {
		Kind    string  `json:"kind"`
		Watcher string  `json:"watcher"`
		State   string  `json:"state"`
		RV      string  `json:"rv"`
		Err     *string `json:"err"`
	}
	readyLine struct {
		Kind string `json:"kind"`
	}
	doneLine struct {
		Kind             string `json:"kind"`
		Requests         int64  `json:"requests"`
		AllFinished      bool   `json:"all_finished"`
		WatchersCaughtUp bool   `json:"watchers_caught_up"`
	}
)

// out writes one JSON object per line; the mutex keeps lines whole and in the order of their "t".
type out struct {
	mu     sync.Mutex
	closed bool
}

func (o *out) emit(line any) { o.write(line, false) }

// last writes the final line: a request still running after it is not logged.
func (o *out) last(line any) { o.write(line, true) }

func (o *out) write(line any, last bool) {
	body, err := json.Marshal(line)
	if err != nil {
		panic(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = last
	stamped := fmt.Appendf(nil, `{"t":%.9f,`, monotonic())
	os.Stdout.Write(append(append(stamped, body[1:]...), '\n'))
}

// orNull is a JSON null for the empty string.
func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func errText(err error) *string {
	if err == nil {
		return nil
	}
	return orNull(err.Error())
}

func seqOf(obj metav1.Object) int64 {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		if n, err := strconv.ParseInt(cm.Data["seq"], 10, 64); err == nil {
			return n
		}
	}
	return -1
}

// highWater is the highest resourceVersion passed to raise (kube-apiserver's are etcd's integer
// revisions).
type highWater struct{ v atomic.Int64 }

func (h *highWater) raise(rv string) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return
	}
	for old := h.v.Load(); n > old && !h.v.CompareAndSwap(old, n); old = h.v.Load() {
	}
}

type probe struct {
	opts options
	cs   *kubernetes.Clientset
	rc   rest.Interface
	out  *out
	seq  atomic.Int64
	// The last acknowledged write and what each watcher has delivered: at the end the watchers
	// get up to --timeout to deliver the last writes' events.
	written highWater
	seen    map[string]*highWater
}

func (p *probe) configMap(name string, seq int64) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.opts.namespace, Labels: map[string]string{label: "1"}},
	}
	if seq >= 0 {
		cm.Data = map[string]string{"seq": strconv.FormatInt(seq, 10)}
	}
	return cm
}

// retry runs step until it succeeds or ctx ends; failures go to stderr.
func retry(ctx context.Context, what string, step func(context.Context) error) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := step(attempt)
		cancel()
		if err == nil {
			return nil
		}
		fmt.Fprintf(os.Stderr, "kha-probe: %s: %v (retrying)\n", what, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(setupRetry):
		}
	}
}

// setup makes the namespace and the keys GET reads, and continues seq above the highest one left
// in the namespace, so that a restarted probe keeps every key's seq rising.
func (p *probe) setup(ctx context.Context) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.opts.namespace}}
	err := retry(ctx, "create namespace", func(c context.Context) error {
		_, err := p.cs.CoreV1().Namespaces().Create(c, ns, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	for i := 0; i < p.opts.keys; i++ {
		cm := p.configMap(fmt.Sprintf("probe-key-%d", i), -1)
		err := retry(ctx, "create "+cm.Name, func(c context.Context) error {
			_, err := p.cs.CoreV1().ConfigMaps(p.opts.namespace).Create(c, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
		if err != nil {
			return "", err
		}
	}
	var rv string
	err = retry(ctx, "list", func(c context.Context) error {
		list, err := p.cs.CoreV1().ConfigMaps(p.opts.namespace).List(c, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		top := int64(-1)
		for i := range list.Items {
			top = max(top, seqOf(&list.Items[i]))
		}
		p.seq.Store(top + 1)
		rv = list.ResourceVersion
		return nil
	})
	return rv, err
}

// request runs operation number seq (get, create, update in turn) and logs its result. It goes
// through the clientset's REST client, as the typed client does, so that the HTTP status is known.
func (p *probe) request(seq int64) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.timeout)
	defer cancel()
	configmaps := func(r *rest.Request) *rest.Request { return r.Namespace(p.opts.namespace).Resource("configmaps") }
	key := fmt.Sprintf("probe-key-%d", seq%int64(p.opts.keys))
	var op string
	var res rest.Result
	start := monotonic()
	switch seq % 3 {
	case 0:
		op = "get"
		res = configmaps(p.rc.Get()).Name(key).Do(ctx)
	case 1:
		op, key = "create", fmt.Sprintf("probe-seq-%d", seq)
		res = configmaps(p.rc.Post()).Body(p.configMap(key, seq)).Do(ctx)
	default:
		// An unconditional update (resourceVersion left empty): the probe owns the key and
		// wants the write, not a conflict; a missing key is created.
		op = "update"
		res = configmaps(p.rc.Put()).Name(key).Body(p.configMap(key, seq)).Do(ctx)
		if apierrors.IsNotFound(res.Error()) {
			res = configmaps(p.rc.Post()).Body(p.configMap(key, seq)).Do(ctx)
		}
	}
	var code int
	res.StatusCode(&code)
	var cm corev1.ConfigMap
	err := res.Into(&cm)
	end := monotonic()
	if err == nil && op != "get" {
		p.written.raise(cm.ResourceVersion)
	}
	p.out.emit(requestLine{
		Kind: "request", Op: op, Seq: seq, Start: start, End: end, OK: err == nil, Code: code,
		Err: errText(err), RV: orNull(cm.ResourceVersion), Key: key,
	})
}

// requests starts one request every 1/rate seconds, each in its own goroutine (an open loop:
// a slow or hung request never delays the next), until ctx ends.
func (p *probe) requests(ctx context.Context, inflight *sync.WaitGroup) {
	interval := time.Duration(float64(time.Second) / p.opts.rate)
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		next = next.Add(interval)
		seq := p.seq.Add(1) - 1
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			p.request(seq)
		}()
	}
}

func (p *probe) event(watcher string, kind watch.EventType, obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	p.seen[watcher].raise(m.GetResourceVersion())
	p.out.emit(eventLine{
		Kind: "event", Watcher: watcher, Type: string(kind), Name: m.GetName(), Seq: seqOf(m),
		RV: m.GetResourceVersion(),
	})
}

func (p *probe) watchState(state, rv string, err error) {
	p.out.emit(watchLine{Kind: "watch", Watcher: "raw", State: state, RV: rv, Err: errText(err)})
}

// rawWatch watches from the last resourceVersion it saw and reconnects as soon as the stream
// ends; when that version is too old (410), it lists and watches from the list's version.
// opened is closed once the first watch is open.
func (p *probe) rawWatch(ctx context.Context, rv string, opened chan<- struct{}) {
	configmaps := p.cs.CoreV1().ConfigMaps(p.opts.namespace)
	first := true
	for ctx.Err() == nil {
		w, err := configmaps.Watch(ctx, metav1.ListOptions{
			LabelSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true,
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.watchState("error", rv, err)
			if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				rv = p.relist(ctx, rv)
			} else {
				time.Sleep(watchRetry)
			}
			continue
		}
		p.watchState("open", rv, nil)
		if first {
			close(opened)
			first = false
		}
		gone := false
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				if ctx.Err() != nil {
					break // the probe is stopping: the stream's error is our own cancel
				}
				err := apierrors.FromObject(ev.Object)
				p.watchState("error", rv, err)
				gone = apierrors.IsGone(err) || apierrors.IsResourceExpired(err)
				break
			}
			m, err := meta.Accessor(ev.Object)
			if err != nil {
				continue
			}
			rv = m.GetResourceVersion()
			if ev.Type == watch.Bookmark {
				p.seen["raw"].raise(rv)
			} else {
				p.event("raw", ev.Type, ev.Object)
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return
		}
		p.watchState("closed", rv, nil)
		if gone {
			rv = p.relist(ctx, rv)
		}
	}
}

// relist lists the ConfigMaps and returns the list's resourceVersion (rv on failure, so that
// the next watch fails again and lands here again).
func (p *probe) relist(ctx context.Context, rv string) string {
	list, err := p.cs.CoreV1().ConfigMaps(p.opts.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		p.watchState("error", rv, err)
		time.Sleep(watchRetry)
		return rv
	}
	p.watchState("relist", list.ResourceVersion, nil)
	return list.ResourceVersion
}

// informer runs until stop closes (the factory's Shutdown then waits for its handler); it returns
// once the handler has seen the initial list (the ADDED events of what exists come before "ready")
// or wait closes.
func (p *probe) informer(stop, wait <-chan struct{}) informers.SharedInformerFactory {
	factory := informers.NewSharedInformerFactoryWithOptions(p.cs, 0,
		informers.WithNamespace(p.opts.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().ConfigMaps().Informer()
	handler, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.event("informer", watch.Added, obj) },
		UpdateFunc: func(_, obj any) { p.event("informer", watch.Modified, obj) },
		DeleteFunc: func(obj any) { p.event("informer", watch.Deleted, obj) },
	})
	if err != nil {
		panic(err)
	}
	factory.Start(stop)
	cache.WaitForCacheSync(wait, handler.HasSynced)
	return factory
}

func run(o options) error {
	config, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	config.QPS = -1 // no client-side rate limiter (client-go's default is 5 per second)
	config.UserAgent = "kha-probe"
	cs, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	p := &probe{opts: o, cs: cs, rc: cs.CoreV1().RESTClient(), out: &out{}}
	p.seen = map[string]*highWater{"raw": {}, "informer": {}}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	// The watchers run until the end; the requests stop first and are waited for.
	watchers, stopWatchers := context.WithCancel(context.Background())
	defer stopWatchers()
	rawDone := make(chan struct{})
	var factory informers.SharedInformerFactory

	rv, err := p.setup(ctx)
	first := p.seq.Load()
	if err == nil && o.raw {
		opened := make(chan struct{})
		go func() { p.rawWatch(watchers, rv, opened); close(rawDone) }()
		select {
		case <-opened:
		case <-ctx.Done():
		}
	} else {
		close(rawDone)
	}
	if err == nil && o.informs {
		factory = p.informer(watchers.Done(), ctx.Done())
	}
	if ctx.Err() == nil {
		p.out.emit(readyLine{Kind: "ready"})
	}

	var inflight sync.WaitGroup
	if ctx.Err() == nil && o.requests {
		p.requests(ctx, &inflight)
	}
	<-ctx.Done()
	started := p.seq.Load() - first
	finished := make(chan struct{})
	go func() { inflight.Wait(); close(finished) }()
	waited := true
	select {
	case <-finished:
	case <-time.After(o.timeout):
		waited = false
	}
	caught := p.drain(o, time.Now().Add(o.timeout))
	stopWatchers()
	<-rawDone
	if factory != nil {
		factory.Shutdown()
	}
	p.out.last(doneLine{Kind: "done", Requests: started, AllFinished: waited, WatchersCaughtUp: caught})
	return nil
}

// drain waits until each running watcher has delivered the last acknowledged write, or deadline.
func (p *probe) drain(o options, deadline time.Time) bool {
	for {
		written := p.written.v.Load()
		caught := (!o.raw || p.seen["raw"].v.Load() >= written) &&
			(!o.informs || p.seen["informer"].v.Load() >= written)
		if caught || time.Now().After(deadline) {
			return caught
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err == nil {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kha-probe: %v\n", err)
		os.Exit(2)
	}
}
