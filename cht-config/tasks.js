/*
 * LTFU follow-up tasks.
 *
 * One INTEROP_FOLLOW_UP record (sent by the ltfu mediator through the records API) opens a case
 * for a patient. The CHW gets one task per attempt, following the Kenyan tracing routine:
 *   attempt 1: phone the patient on day 0-1 after the request;
 *   attempt 2: home visit by day 3, shown as soon as attempt 1 was unsuccessful.
 * Every attempt stays visible until the end of the follow-up window (the record's `due_date`,
 * else WINDOW_DAYS after the request); an attempt still open then expires (task state Failed).
 *
 * An attempt task is resolved by any ltfu_follow_up report for the same case. A report whose
 * outcome is final (anything but not_located) closes the case: no further attempt is offered.
 * A not_located outcome before the last attempt opens the next attempt.
 * An INTEROP_FOLLOW_UP_CANCEL record for the same case withdraws every open attempt (Cancelled).
 *
 * Keep MAX_ATTEMPTS and WINDOW_DAYS equal to the mediator's LTFU_MAX_ATTEMPTS and
 * LTFU_FOLLOW_UP_WINDOW_DAYS.
 */

const REQUEST_FORM = 'INTEROP_FOLLOW_UP';
const CANCEL_FORM = 'INTEROP_FOLLOW_UP_CANCEL';
const FOLLOW_UP_FORM = 'ltfu_follow_up';

const MAX_ATTEMPTS = 2;
const WINDOW_DAYS = 14;
// Day (after the request) by which attempt n+1 should be made, and how it is made.
const ROUTINE = [
  { byDay: 1, method: 'phone' },
  { byDay: 3, method: 'home_visit' },
  { byDay: 7, method: 'home_visit' },
];
// Requests whose missed appointment is at least this old are shown with high priority.
const OLD_CASE_DAYS = 28;
const URGENT_PRIORITIES = ['urgent', 'asap', 'stat'];

const DAY_MS = 24 * 60 * 60 * 1000;

const startOfDay = (ms) => {
  const date = new Date(ms);
  date.setHours(0, 0, 0, 0);
  return date;
};

const addDays = (date, days) => {
  const result = new Date(date.getTime());
  result.setDate(result.getDate() + days);
  return result;
};

const wholeDaysBetween = (from, to) => Math.round((startOfDay(to.getTime()) - startOfDay(from.getTime())) / DAY_MS);

// JSON-form `date` fields arrive as ms since epoch: cht-core stores the date's midnight in the
// server's zone, which is UTC midnight on a UTC server (recorded on 5.2). Such a value names a
// calendar date, so it becomes that date's local midnight here (read in the phone's zone, a UTC
// midnight is the day before west of Greenwich). An ISO date string is accepted too.
const toMillis = (value) => {
  if (typeof value === 'number' && isFinite(value)) {
    if (value % DAY_MS === 0) {
      const utc = new Date(value);
      return new Date(utc.getUTCFullYear(), utc.getUTCMonth(), utc.getUTCDate()).getTime();
    }
    return value;
  }
  if (typeof value === 'string' && value) {
    const parsed = /^\d{4}-\d{2}-\d{2}$/.test(value)
      ? new Date(Number(value.slice(0, 4)), Number(value.slice(5, 7)) - 1, Number(value.slice(8, 10))).getTime()
      : Date.parse(value);
    return isNaN(parsed) ? undefined : parsed;
  }
  return undefined;
};

const isoDate = (value) => {
  const ms = toMillis(value);
  if (ms === undefined) {
    return '';
  }
  const date = new Date(ms);
  const pad = (n) => (n < 10 ? '0' : '') + n;
  return date.getFullYear() + '-' + pad(date.getMonth() + 1) + '-' + pad(date.getDate());
};

const fieldsOf = (report) => report.fields || {};

const caseRefOf = (report) => fieldsOf(report).case_ref || '';

const isCancelled = (contact, request) => contact.reports.some(report =>
  report.form === CANCEL_FORM &&
  caseRefOf(report) === caseRefOf(request) &&
  report.reported_date >= request.reported_date
);

// Follow-up reports that belong to this request's case, oldest first. Reports filled from the
// patient's profile without a case reference count for the patient's open request.
const attemptsFor = (contact, request) => contact.reports
  .filter(report =>
    report.form === FOLLOW_UP_FORM &&
    report.reported_date >= request.reported_date &&
    (!caseRefOf(report) || caseRefOf(report) === caseRefOf(request))
  )
  .sort((a, b) => a.reported_date - b.reported_date);

const outcomeOf = (report) => (fieldsOf(report).follow_up || {}).outcome;

const isUnsuccessful = (report) => outcomeOf(report) === 'not_located';

const windowEnd = (request) => {
  const dueDate = toMillis(fieldsOf(request).due_date);
  if (dueDate !== undefined) {
    return startOfDay(dueDate);
  }
  return addDays(startOfDay(request.reported_date), WINDOW_DAYS);
};

// When attempt `number` (1-based) is due and from when it is shown.
const attemptSchedule = (number, contact, request) => {
  const requestDay = startOfDay(request.reported_date);
  const lastDay = windowEnd(request);
  const routine = ROUTINE[Math.min(number, ROUTINE.length) - 1];
  let shownFrom = requestDay;
  if (number > 1) {
    const previous = attemptsFor(contact, request)[number - 2];
    shownFrom = startOfDay(previous.reported_date);
  }
  let due = addDays(requestDay, routine.byDay);
  if (due < addDays(shownFrom, 1)) {
    due = addDays(shownFrom, 1);
  }
  if (due > lastDay) {
    due = lastDay;
  }
  if (shownFrom > due) {
    shownFrom = due;
  }
  return {
    due,
    start: wholeDaysBetween(shownFrom, due),
    end: Math.max(0, wholeDaysBetween(due, lastDay)),
    method: routine.method,
  };
};

const attemptApplies = (number, contact, request) => {
  if (isCancelled(contact, request)) {
    return false;
  }
  if (number === 1) {
    return true;
  }
  const attempts = attemptsFor(contact, request);
  const previous = attempts[number - 2];
  // Every earlier attempt was unsuccessful, else the case closed before this attempt.
  return !!previous && attempts.slice(0, number - 1).every(isUnsuccessful);
};

const attemptTask = (number) => ({
  name: 'ltfu-follow-up-attempt-' + number,
  title: number === 1 ? 'task.ltfu.follow_up.phone.title' : 'task.ltfu.follow_up.visit.title',
  icon: 'icon-ltfu-follow-up',
  appliesTo: 'reports',
  appliesToType: [REQUEST_FORM],
  appliesIf: (contact, report) => attemptApplies(number, contact, report),
  resolvedIf: (contact, report) => attemptsFor(contact, report).length >= number,
  priority: (contact, report) => {
    const fields = fieldsOf(report);
    const missed = toMillis(fields.missed_appointment_date);
    const longMissed = missed !== undefined && (Date.now() - missed) >= OLD_CASE_DAYS * DAY_MS;
    if (URGENT_PRIORITIES.indexOf(fields.priority) !== -1 || longMissed) {
      return { level: 'high', label: 'task.ltfu.priority.high' };
    }
    return { level: 'medium', label: 'task.ltfu.priority.medium' };
  },
  actions: [{
    type: 'report',
    form: FOLLOW_UP_FORM,
    label: 'task.ltfu.follow_up.action',
    modifyContent: (content, contact, report) => {
      const fields = fieldsOf(report);
      content.task_case_ref = fields.case_ref || '';
      content.request_id = fields.request_id || '';
      content.reason = fields.reason || '';
      content.reason_text = fields.reason_text || '';
      content.facility_name = fields.facility_name || '';
      content.missed_appointment_date = isoDate(fields.missed_appointment_date);
      content.due_date = isoDate(windowEnd(report).getTime());
      content.task_attempt_no = String(number);
      content.suggested_method = attemptSchedule(number, contact, report).method;
    },
  }],
  events: [{
    id: 'attempt-' + number,
    start: 0,
    end: WINDOW_DAYS,
    // The display window depends on the request (its due_date) and on the earlier attempts, so
    // the event's start/end are set here: cht-conf's task emitter reads them right after
    // calling dueDate().
    dueDate: function (event, contact, report) {
      const schedule = attemptSchedule(number, contact, report);
      event.start = schedule.start;
      event.end = schedule.end;
      return schedule.due;
    },
  }],
});

const tasks = [];
for (let number = 1; number <= MAX_ATTEMPTS; number++) {
  tasks.push(attemptTask(number));
}

module.exports = tasks;
