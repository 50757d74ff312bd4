package client

// Requests returns how many SendStream requests the Publisher wrote.
func (p *Publisher) Requests() int64 { return p.requests.Load() }

// Opens returns how many streams Receive opened.
func (s *Subscriber) Opens() int64 { return s.opens.Load() }
