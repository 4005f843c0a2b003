/*
 * Contact summary: person details, and for patients with LTFU requests a card showing the open
 * case. `context.ltfu_case_ref` (the open case) lets the follow-up form be opened from the
 * patient's profile and still carry the case reference.
 */

const REQUEST_FORM = 'INTEROP_FOLLOW_UP';
const CANCEL_FORM = 'INTEROP_FOLLOW_UP_CANCEL';
const FOLLOW_UP_FORM = 'ltfu_follow_up';

const thisContact = contact;
const allReports = reports;

const DAY_MS = 24 * 60 * 60 * 1000;

// JSON-form `date` fields are stored as ms since epoch (the date's midnight in the CHT server's zone:
// UTC midnight on a UTC server, as 5.2 recorded). Shown and passed on as the calendar date they name.
const calendarDate = (value) => {
  if (typeof value !== 'number' || !isFinite(value)) {
    return value || '';
  }
  const d = new Date(value);
  const utc = value % DAY_MS === 0;
  const parts = utc ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate()] : [d.getFullYear(), d.getMonth() + 1, d.getDate()];
  return parts.map((n, i) => (i > 0 && n < 10 ? '0' : '') + n).join('-');
};

const caseRefOf = (report) => (report.fields && report.fields.case_ref) || '';
const outcomeOf = (report) => ((report.fields && report.fields.follow_up) || {}).outcome;
const byNewest = (a, b) => b.reported_date - a.reported_date;

const caseState = (request) => {
  const ref = caseRefOf(request);
  const later = allReports.filter(r => r.reported_date >= request.reported_date && caseRefOf(r) === ref);
  if (later.some(r => r.form === CANCEL_FORM)) {
    return { open: false, status: 'cancelled' };
  }
  const attempts = later.filter(r => r.form === FOLLOW_UP_FORM).sort(byNewest);
  const last = attempts[0];
  if (last && outcomeOf(last) !== 'not_located') {
    return { open: false, status: outcomeOf(last), last };
  }
  return { open: true, status: last ? 'not_located' : 'open', last, attempts: attempts.length };
};

const requests = allReports.filter(r => r.form === REQUEST_FORM).sort(byNewest);
const latestRequest = requests[0];
const latestState = latestRequest ? caseState(latestRequest) : undefined;
const openRequest = requests.find(r => caseState(r).open);
const isPerson = thisContact.type === 'person' ||
  (thisContact.type === 'contact' && thisContact.contact_type === 'person');

const context = {
  ltfu_case_ref: openRequest ? caseRefOf(openRequest) : '',
  ltfu_missed_date: openRequest ? calendarDate((openRequest.fields || {}).missed_appointment_date) : '',
  ltfu_open_cases: requests.filter(r => caseState(r).open).length,
};

const fields = [
  { appliesToType: 'person', label: 'patient_id', value: thisContact.patient_id, width: 4 },
  { appliesToType: 'person', label: 'contact.sex', value: thisContact.sex ? 'contact.sex.' + thisContact.sex : '', translate: true, width: 4 },
  { appliesToType: 'person', label: 'contact.age', value: thisContact.date_of_birth, width: 4, filter: 'age' },
  { appliesToType: 'person', label: 'person.field.phone', value: thisContact.phone, width: 4, filter: 'phone' },
  { appliesToType: '!person', label: 'contact.parent', value: lineage, filter: 'lineage' },
];

const cards = [
  {
    label: 'ltfu.card.title',
    appliesToType: 'report',
    appliesIf: () => isPerson && !!latestRequest,
    fields: () => {
      const f = latestRequest.fields || {};
      return [
        { label: 'ltfu.card.case', value: f.case_ref, width: 6 },
        { label: 'ltfu.card.status', value: 'ltfu.status.' + latestState.status, translate: true, width: 6 },
        { label: 'ltfu.card.reason', value: f.reason_text || f.reason, width: 6 },
        { label: 'ltfu.card.facility', value: f.facility_name, width: 6 },
        { label: 'ltfu.card.missed', value: calendarDate(f.missed_appointment_date), filter: 'simpleDate', width: 6 },
        { label: 'ltfu.card.due', value: calendarDate(f.due_date), filter: 'simpleDate', width: 6 },
      ];
    },
  },
];

module.exports = { context, fields, cards };
