package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	tasukiotel "github.com/tasukiq/tasuki/otel"
	"github.com/tasukiq/tasuki/tasuki"
	"github.com/tasukiq/tasuki/worker"
)

// ChargeCard charges an order's card.
type ChargeCard struct {
	Order int64 `json:"order"`
	Cents int   `json:"cents"`
}

// Kind names the jobs of ChargeCard: stable, whatever the Go type is
// called later.
func (ChargeCard) Kind() string { return "charge_card" }

// InsertOpts: charges go to their own queue, with more attempts.
func (ChargeCard) InsertOpts() tasuki.InsertOpts {
	return tasuki.InsertOpts{Queue: "payments", MaxAttempts: 50}
}

// SendEmail sends one email.
type SendEmail struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// Kind names the jobs of SendEmail.
func (SendEmail) Kind() string { return "send_email" }

// NightlyReport sums up the day; a periodic job enqueues it.
type NightlyReport struct{}

// Kind names the jobs of NightlyReport.
func (NightlyReport) Kind() string { return "nightly_report" }

// errDeclined is a card the bank refused: retrying will not help.
var errDeclined = errors.New("card declined")

// Shop is the service: it takes orders and runs their jobs.
type Shop struct {
	pool     *pgxpool.Pool
	inserter *tasuki.Inserter
	log      *slog.Logger

	mu     sync.Mutex
	sent   []string // the emails sent, for the demo's summary
	totals int      // cents charged
}

// NewShop returns the service. Its inserts go through the given insert
// middleware (OpenTelemetry's, say).
func NewShop(pool *pgxpool.Pool, log *slog.Logger, mws ...tasuki.InsertMiddleware) (*Shop, error) {
	ins, err := tasuki.NewInserter(pool, tasuki.ClientConfig{InsertMiddleware: mws})
	if err != nil {
		return nil, err
	}
	return &Shop{pool: pool, inserter: ins, log: log}, nil
}

// PlaceOrder records an order's jobs, a charge and a confirmation email,
// in the caller's transaction: they exist if and only if the order does.
func (s *Shop) PlaceOrder(ctx context.Context, tx pgx.Tx, order int64, email string, cents int) error {
	_, err := s.inserter.InsertManyTx(ctx, tx, []tasuki.InsertManyParams{
		{Payload: ChargeCard{Order: order, Cents: cents}},
		{Payload: SendEmail{To: email, Subject: fmt.Sprintf("Order %d received", order)}},
	})
	return err
}

func (s *Shop) chargeCard(ctx context.Context, job *tasuki.Job[ChargeCard]) error {
	if job.Payload.Cents > 100_000 {
		return tasuki.Cancel(errDeclined)
	}
	s.mu.Lock()
	s.totals += job.Payload.Cents
	s.mu.Unlock()
	return nil
}

func (s *Shop) sendEmail(ctx context.Context, job *tasuki.Job[SendEmail]) error {
	s.mu.Lock()
	s.sent = append(s.sent, job.Payload.To)
	s.mu.Unlock()
	return nil
}

func (s *Shop) nightlyReport(ctx context.Context, job *tasuki.Job[NightlyReport]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log.Info("report", slog.Int("charged_cents", s.totals), slog.Int("emails", len(s.sent)))
	return nil
}

// logAttempts is work middleware that logs every attempt with its kind,
// outcome and duration: one place for what each handler would otherwise
// repeat.
func logAttempts(log *slog.Logger) worker.Middleware {
	return func(ctx context.Context, job *tasuki.Job[json.RawMessage], next func(context.Context) error) error {
		start := time.Now()
		err := next(ctx)
		log.Info("job", slog.String("kind", job.Kind), slog.Int64("id", job.ID), slog.Int("attempt", job.Attempt),
			slog.Duration("took", time.Since(start)), slog.Any("error", err))
		return err
	}
}

// NewWorker returns the process's one worker for every kind of the shop,
// with OpenTelemetry outermost (it sees the final outcome), then logging,
// and the nightly report scheduled.
func (s *Shop) NewWorker(inst *tasukiotel.Instrumentation, reportEvery time.Duration) (*worker.Worker, error) {
	cfg := worker.Config{
		Queues: map[string]worker.QueueConfig{"default": {}, "payments": {Concurrency: 10}},
		Logger: s.log,
		ErrorHandler: func(ctx context.Context, job *tasuki.Job[json.RawMessage], err error) {
			s.log.Error("job attempt failed", slog.String("kind", job.Kind), slog.Int64("id", job.ID), slog.Any("error", err))
		},
	}
	if inst != nil {
		cfg.Middleware = append(cfg.Middleware, inst.Middleware())
		cfg.InsertMiddleware = append(cfg.InsertMiddleware, inst.InsertMiddleware())
	}
	cfg.Middleware = append(cfg.Middleware, logAttempts(s.log))
	w, err := worker.New(s.pool, cfg,
		worker.HandleFunc(s.chargeCard),
		worker.HandleFunc(s.sendEmail),
		worker.HandleFunc(s.nightlyReport),
	)
	if err != nil {
		return nil, err
	}
	err = w.AddPeriodic(worker.Periodic("nightly-report", worker.Every(reportEvery),
		func() (NightlyReport, *tasuki.InsertOpts) { return NightlyReport{}, nil }, worker.PeriodicOpts{}))
	return w, err
}
