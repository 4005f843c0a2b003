/*
 * The LTFU loop as a CHW sees it, in cht-conf-test-harness (cht-core 4.11 rules engine and
 * Enketo, in Chromium): a request record arrives, a task appears, the CHW fills the follow-up
 * form, the task resolves or the next attempt is scheduled; a cancel record or the end of the
 * window removes the task.
 *
 * Set LTFU_HARNESS_EXPORT_DIR to write the submitted reports and the patient (hydrated as CHT
 * outbound sees them) as JSON files, for the outbound-mapping test on the Python side.
 */
const fs = require('fs');
const path = require('path');
const { expect } = require('chai');
const Harness = require('cht-conf-test-harness');

const harness = new Harness({ directory: path.join(__dirname, '..'), headless: true });
const exportDir = process.env.LTFU_HARNESS_EXPORT_DIR;

const PATIENT = 'patient_amina';
const CASE = 'SR-1001';
const REQUEST_DAY = '2025-03-03';

const localMs = (isoDate) => new Date(`${isoDate}T00:00:00`).getTime();
const dayAfter = (isoDate, days) => {
  const date = new Date(`${isoDate}T00:00:00`);
  date.setDate(date.getDate() + days);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
};

// A record as the records API stores it for the JSON form INTEROP_FOLLOW_UP: upper-case form,
// declared fields only, `date` fields as ms since epoch (api/src/services/records.js).
const requestRecord = (fields = {}) => ({
  type: 'data_record',
  form: 'INTEROP_FOLLOW_UP',
  errors: [],
  tasks: [],
  reported_date: harness.getNow(),
  sms_message: { form: 'INTEROP_FOLLOW_UP' },
  fields: Object.assign({
    patient_uuid: PATIENT,
    case_ref: CASE,
    request_id: 'KE-ART-1001',
    facility_id: '13939',
    facility_name: 'Kisumu County Hospital',
    reason: 'HIV.H.DE2',
    reason_text: 'Missed ART refill',
    missed_appointment_date: localMs('2025-02-24'),
    priority: 'routine',
  }, fields),
});

const cancelRecord = (caseRef = CASE) => ({
  type: 'data_record',
  form: 'INTEROP_FOLLOW_UP_CANCEL',
  errors: [],
  tasks: [],
  reported_date: harness.getNow(),
  sms_message: { form: 'INTEROP_FOLLOW_UP_CANCEL' },
  fields: { patient_uuid: PATIENT, case_ref: caseRef, reason: 'returned to clinic' },
});

const followUpTasks = async () => harness.getTasks({ actionForm: 'ltfu_follow_up' });

// The answers, in the order the questions show, and the fields each outcome must produce.
const OUTCOMES = {
  returning_to_care: {
    answers: ['phone', 'yes', 'client', 'returning_to_care', dayAfter(REQUEST_DAY, 4), 'Comes on Friday'],
    expected: { method: 'phone', contacted: 'yes', info_source: 'client', next_appointment_date: dayAfter(REQUEST_DAY, 4), notes: 'Comes on Friday' },
  },
  already_returned: {
    answers: ['phone', 'yes', 'treatment_provider', 'already_returned'],
    expected: { method: 'phone', contacted: 'yes', info_source: 'treatment_provider' },
  },
  refused: {
    answers: ['home_visit', 'yes', 'client', 'refused', 'side_effects'],
    expected: { method: 'home_visit', contacted: 'yes', refusal_reason: 'side_effects' },
  },
  not_located: {
    answers: ['phone', 'no', 'not_located', 'phone_off'],
    expected: { method: 'phone', contacted: 'no', not_located_reason: 'phone_off' },
  },
  self_transferred: {
    answers: ['sms', 'yes', 'client', 'self_transferred', 'Nairobi West Hospital'],
    expected: { method: 'sms', transfer_facility: 'Nairobi West Hospital' },
  },
  hospitalized: {
    answers: ['home_visit', 'yes', 'family_partner', 'hospitalized'],
    expected: { method: 'home_visit', info_source: 'family_partner' },
  },
  moved: {
    answers: ['home_visit', 'yes', 'other', 'Neighbour', 'moved', '2025-02-20', 'Mombasa'],
    expected: { info_source: 'other', info_source_other: 'Neighbour', moved_date: '2025-02-20', new_area: 'Mombasa' },
  },
  deceased: {
    answers: ['home_visit', 'yes', 'family_partner', 'deceased', '2025-02-27', 'home'],
    expected: { death_date: '2025-02-27', death_place: 'home' },
  },
};

// Capture the harness's "report without subject id" warning: a report that CHT cannot link to
// the patient would never resolve the task in a real CHT.
let warnings = [];
const originalWarn = console.warn;

const writeExport = async (name, report) => {
  if (!exportDir) {
    return;
  }
  fs.mkdirSync(exportDir, { recursive: true });
  // Outbound push maps the hydrated doc: contact and patient with their full lineage. In CHT the
  // report's `contact` is the submitting user's contact (the CHW); the harness stores the form's
  // subject there, so the export puts the CHW back, as CHT would.
  const hydrated = await harness.coreAdapter.fetchHydratedDoc(report._id, harness.state);
  hydrated.contact = await harness.coreAdapter.fetchHydratedDoc(harness.options.user, harness.state);
  hydrated.from = hydrated.contact.phone;
  fs.writeFileSync(path.join(exportDir, `${name}.json`), JSON.stringify(hydrated, null, 2));
};

describe('LTFU follow-up (cht-conf-test-harness)', () => {
  before(async () => harness.start());
  after(async () => harness.stop());

  beforeEach(async () => {
    await harness.clear();
    await harness.setNow(`${REQUEST_DAY}T08:00:00`);
    warnings = [];
    console.warn = (...args) => warnings.push(args.join(' '));
  });

  afterEach(() => {
    console.warn = originalWarn;
    expect(harness.consoleErrors.map(msg => `${msg.type()}: ${msg.text()}`)).to.deep.equal([]);
  });

  it('an incoming INTEROP_FOLLOW_UP record shows a phone task for the CHW, with the case as form inputs', async () => {
    const request = requestRecord();
    harness.pushMockedDoc(request);

    const tasks = await followUpTasks();

    expect(tasks).to.have.length(1);
    const [task] = tasks;
    expect(task.owner).to.equal(PATIENT);
    expect(task.emission.title).to.equal('task.ltfu.follow_up.phone.title');
    expect(task.emission.dueDate).to.equal(dayAfter(REQUEST_DAY, 1));
    expect(task.emission.startDate).to.equal(REQUEST_DAY);
    expect(task.emission.endDate).to.equal(dayAfter(REQUEST_DAY, 14));
    expect(task.emission.priority).to.equal('medium');
    const [action] = task.emission.actions;
    expect(action.form).to.equal('ltfu_follow_up');
    expect(action.content).to.include({
      source: 'task',
      source_id: request._id,
      task_case_ref: CASE,
      request_id: 'KE-ART-1001',
      reason: 'HIV.H.DE2',
      reason_text: 'Missed ART refill',
      facility_name: 'Kisumu County Hospital',
      missed_appointment_date: '2025-02-24',
      due_date: dayAfter(REQUEST_DAY, 14),
      task_attempt_no: '1',
      suggested_method: 'phone',
    });
  });

  it('shows requests that are urgent or long overdue with high priority', async () => {
    harness.pushMockedDoc(requestRecord({ priority: 'urgent' }));
    const [urgent] = await followUpTasks();
    expect(urgent.emission.priority).to.equal('high');

    await harness.clear();
    await harness.setNow(`${REQUEST_DAY}T08:00:00`);
    harness.pushMockedDoc(requestRecord({ case_ref: 'SR-OLD', missed_appointment_date: localMs('2025-01-20') }));
    const [old] = await followUpTasks();
    expect(old.emission.priority).to.equal('high');
  });

  for (const [outcome, { answers, expected }] of Object.entries(OUTCOMES)) {
    it(`outcome ${outcome}: the report is linked to the patient and carries the case`, async () => {
      const request = requestRecord();
      harness.pushMockedDoc(request);
      await harness.flush({ hours: 2 });
      const [task] = await followUpTasks();

      await harness.loadAction(task);
      const result = await harness.fillForm(answers);

      expect(result.errors).to.deep.equal([]);
      const { report } = result;
      expect(report.form).to.equal('ltfu_follow_up');
      expect(report.fields).to.include({
        patient_uuid: PATIENT,
        patient_id: '28469',
        patient_name: 'Amina Otieno',
        case_ref: CASE,
        request_doc_id: request._id,
        attempt_no: '1',
      });
      expect(report.fields.inputs.contact._id).to.equal(PATIENT);
      expect(report.fields.follow_up).to.include(Object.assign({ outcome }, expected));
      expect(warnings.filter(w => w.includes('without subject id'))).to.deep.equal([]);
      await writeExport(`follow-up-${outcome}`, report);

      const after = await followUpTasks();
      if (outcome === 'not_located') {
        expect(after).to.have.length(1);
        expect(after[0].emission.actions[0].content.task_attempt_no).to.equal('2');
      } else {
        expect(after).to.deep.equal([]);
        expect(await harness.countTaskDocsByState({ actionForm: 'ltfu_follow_up' }))
          .to.include({ Completed: 1, Ready: 0, Cancelled: 0, Failed: 0 });
      }
    });
  }

  it('an unsuccessful phone attempt schedules a home visit; its outcome closes the case', async () => {
    harness.pushMockedDoc(requestRecord());
    await harness.flush({ hours: 4 });
    const [first] = await followUpTasks();
    const attempt1 = await harness.loadAction(first, OUTCOMES.not_located.answers);
    expect(attempt1.errors).to.deep.equal([]);

    const [second] = await followUpTasks();
    expect(second.emission.title).to.equal('task.ltfu.follow_up.visit.title');
    expect(second.emission.dueDate).to.equal(dayAfter(REQUEST_DAY, 3));
    expect(second.emission.actions[0].content).to.include({ task_attempt_no: '2', suggested_method: 'home_visit', task_case_ref: CASE });

    await harness.flush(2);
    const attempt2 = await harness.loadAction(second, OUTCOMES.returning_to_care.answers.map(a =>
      a === dayAfter(REQUEST_DAY, 4) ? dayAfter(REQUEST_DAY, 6) : a));
    expect(attempt2.errors).to.deep.equal([]);
    expect(attempt2.report.fields).to.include({ attempt_no: '2', case_ref: CASE, patient_uuid: PATIENT });
    await writeExport('follow-up-attempt-2', attempt2.report);

    expect(await followUpTasks()).to.deep.equal([]);
    expect(await harness.countTaskDocsByState({ actionForm: 'ltfu_follow_up' }))
      .to.include({ Completed: 2, Ready: 0, Failed: 0 });
  });

  it('after the last allowed attempt a not-located outcome closes the case', async () => {
    harness.pushMockedDoc(requestRecord());
    await harness.flush({ hours: 1 });
    const [first] = await followUpTasks();
    expect((await harness.loadAction(first, OUTCOMES.not_located.answers)).errors).to.deep.equal([]);
    await harness.flush(1);
    const [second] = await followUpTasks();
    expect((await harness.loadAction(second, ['home_visit', 'no', 'not_located', 'not_home'])).errors).to.deep.equal([]);

    expect(await followUpTasks()).to.deep.equal([]);
    await harness.flush(20);
    expect(await followUpTasks()).to.deep.equal([]);
  });

  it('a cancel record for the case withdraws the task; one for another case does not', async () => {
    harness.pushMockedDoc(requestRecord());
    expect(await followUpTasks()).to.have.length(1);

    await harness.flush({ hours: 1 });
    harness.pushMockedDoc(cancelRecord('SR-OTHER'));
    expect(await followUpTasks()).to.have.length(1);

    harness.pushMockedDoc(cancelRecord());
    expect(await followUpTasks()).to.deep.equal([]);
    expect(await harness.countTaskDocsByState({ actionForm: 'ltfu_follow_up' }))
      .to.include({ Cancelled: 1, Ready: 0, Completed: 0 });
  });

  it('a cancel record also withdraws a scheduled second attempt', async () => {
    harness.pushMockedDoc(requestRecord());
    await harness.flush({ hours: 1 });
    const [first] = await followUpTasks();
    await harness.loadAction(first, OUTCOMES.not_located.answers);
    expect(await followUpTasks()).to.have.length(1);

    await harness.flush(1);
    harness.pushMockedDoc(cancelRecord());
    expect(await followUpTasks()).to.deep.equal([]);
  });

  it('the task expires at the due_date sent by the mediator', async () => {
    const windowEnd = dayAfter(REQUEST_DAY, 10);
    harness.pushMockedDoc(requestRecord({ due_date: localMs(windowEnd) }));
    expect((await followUpTasks())[0].emission.endDate).to.equal(windowEnd);

    await harness.setNow(`${windowEnd}T20:00:00`);
    expect(await followUpTasks()).to.have.length(1);

    await harness.setNow(`${dayAfter(windowEnd, 1)}T08:00:00`);
    expect(await followUpTasks()).to.deep.equal([]);
    expect(await harness.countTaskDocsByState({ actionForm: 'ltfu_follow_up' }))
      .to.include({ Failed: 1, Ready: 0, Completed: 0 });
  });

  it('without a due_date the window is 14 days', async () => {
    harness.pushMockedDoc(requestRecord());
    await harness.setNow(`${dayAfter(REQUEST_DAY, 14)}T08:00:00`);
    expect(await followUpTasks()).to.have.length(1);
    await harness.setNow(`${dayAfter(REQUEST_DAY, 15)}T08:00:00`);
    expect(await followUpTasks()).to.deep.equal([]);
    expect(await harness.countTaskDocsByState({ actionForm: 'ltfu_follow_up' })).to.include({ Failed: 1 });
  });

  it('the patient profile knows the open case, so the form can be opened from it', async () => {
    harness.pushMockedDoc(requestRecord());
    let summary = await harness.getContactSummary();
    expect(summary.context).to.include({ ltfu_case_ref: CASE, ltfu_open_cases: 1 });
    const card = summary.cards.find(c => c.label === 'ltfu.card.title');
    expect(card.fields.find(f => f.label === 'ltfu.card.status').value).to.equal('ltfu.status.open');

    await harness.flush({ hours: 1 });
    harness.pushMockedDoc(cancelRecord());
    summary = await harness.getContactSummary();
    expect(summary.context).to.include({ ltfu_case_ref: '', ltfu_open_cases: 0 });
  });

  it('a CHW created through the users API (no role field) gets the task and closes it', async () => {
    // what POST /api/v2/users stores for the CHW's contact (recorded on cht-core 5.2): no `role`
    harness.pushMockedDoc({
      _id: 'chw_mary', type: 'person', name: 'Mary Atieno', phone: '0712345678', reported_date: harness.getNow(),
      parent: { _id: 'area_kondele', parent: { _id: 'facility_kisumu' } },
    });
    const previousUser = harness.user;
    harness.user = 'chw_mary';
    try {
      harness.pushMockedDoc(requestRecord());
      const [task] = await followUpTasks();
      expect(task.owner).to.equal(PATIENT);
      const result = await harness.loadAction(task, OUTCOMES.returning_to_care.answers);
      expect(result.errors).to.deep.equal([]);
      expect(result.report.fields).to.include({ patient_uuid: PATIENT, case_ref: CASE });
      expect(await followUpTasks()).to.deep.equal([]);
      const own = await harness.getContactSummary('chw_mary');
      expect(own.context).to.include({ ltfu_case_ref: '', ltfu_open_cases: 0 });
      expect(own.cards.filter(c => c.label === 'ltfu.card.title')).to.deep.equal([]);
    } finally {
      harness.user = previousUser;
    }
  });

  it('a report whose dates arrive as numbers (UTC midnight, as CHT stores them) keeps its dates west of Greenwich', async () => {
    const zone = process.env.TZ;
    process.env.TZ = 'America/Port-au-Prince';
    try {
      await harness.setNow(`${REQUEST_DAY}T08:00:00`);
      const windowEnd = dayAfter(REQUEST_DAY, 10);
      const utcMidnight = (isoDate) => Date.parse(`${isoDate}T00:00:00Z`);
      harness.pushMockedDoc(requestRecord({
        missed_appointment_date: utcMidnight('2025-02-24'), due_date: utcMidnight(windowEnd),
      }));
      const [task] = await followUpTasks();
      expect(task.emission.endDate).to.equal(windowEnd);
      expect(task.emission.actions[0].content).to.include({ missed_appointment_date: '2025-02-24', due_date: windowEnd });

      const summary = await harness.getContactSummary();
      const card = summary.cards.find(c => c.label === 'ltfu.card.title');
      expect(card.fields.find(f => f.label === 'ltfu.card.missed').value).to.equal('2025-02-24');
      expect(card.fields.find(f => f.label === 'ltfu.card.due').value).to.equal(windowEnd);
      expect(summary.context).to.include({ ltfu_missed_date: '2025-02-24' });

      // opened from the patient's profile (no task): the form shows the date from the contact summary
      const result = await harness.fillForm('ltfu_follow_up', OUTCOMES.returning_to_care.answers);
      expect(result.errors).to.deep.equal([]);
      expect(result.report.fields.follow_up).to.include({ missed_display: '2025-02-24', case_ref_display: CASE });
    } finally {
      process.env.TZ = zone;
    }
  });

  it('exports the patient as CHT outbound sees it', async () => {
    if (!exportDir) {
      return;
    }
    const patient = await harness.coreAdapter.fetchHydratedDoc(PATIENT, harness.state);
    fs.mkdirSync(exportDir, { recursive: true });
    fs.writeFileSync(path.join(exportDir, 'person-patient.json'), JSON.stringify(patient, null, 2));
    expect(patient.parent.parent._id).to.equal('area_kondele');
  });
});
