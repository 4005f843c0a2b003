/*
 * The follow-up form in the CHW's language: the same answers given with the app language set to
 * English, Swahili and Nepali produce the same report fields (choice names and ISO dates do not
 * depend on the language, nor on the calendar of the date picker).
 *
 * The suite runs on the default (Gregorian) build and on a `ltfu cht-config build --calendar
 * bikram-sambat` build (tests/cht_config/test_cht_languages.py). In the second one every date
 * question shows the Bikram Sambat picker; LTFU_HARNESS_CALENDAR=bikram-sambat makes the suite
 * check that it does and enter the dates through it.
 *
 * With LTFU_HARNESS_LANGUAGES_EXPORT_DIR the reports are written there (hydrated, as outbound push sees them)
 * as follow-up-<language>-<outcome>.json, for the mediator-side check of the dates.
 */
const fs = require('fs');
const path = require('path');
const { expect } = require('chai');
const Harness = require('cht-conf-test-harness');

const harness = new Harness({ directory: path.join(__dirname, '..'), headless: true });
const BIKRAM_SAMBAT = process.env.LTFU_HARNESS_CALENDAR === 'bikram-sambat';
const exportDir = process.env.LTFU_HARNESS_LANGUAGES_EXPORT_DIR;

const PATIENT = 'patient_amina';
const CASE = 'SR-2001';
const REQUEST_DAY = '2025-03-03';

const requestRecord = () => ({
  _id: 'request-sr-2001',
  type: 'data_record',
  form: 'INTEROP_FOLLOW_UP',
  errors: [],
  tasks: [],
  reported_date: harness.getNow(),
  sms_message: { form: 'INTEROP_FOLLOW_UP' },
  fields: {
    patient_uuid: PATIENT,
    case_ref: CASE,
    request_id: 'KE-ART-2001',
    facility_name: 'Kisumu County Hospital',
    reason: 'HIV.H.DE2',
    reason_text: 'Missed ART refill',
    missed_appointment_date: new Date('2025-02-24T00:00:00').getTime(),
  },
});

// A question label in each language: proof that the form really showed that language.
const METHOD_QUESTION = {
  en: 'How did you try to reach the patient?',
  sw: 'Ulijaribu kumfikia mgonjwa kwa njia gani?',
  ne: 'तपाईंले बिरामीलाई कसरी सम्पर्क गर्ने प्रयास गर्नुभयो?',
};

const SCENARIOS = {
  returning_to_care: ['phone', 'yes', 'client', 'returning_to_care', '2025-03-07', 'Anakuja Ijumaa'],
  deceased: ['home_visit', 'yes', 'family_partner', 'deceased', '2025-02-27', 'home'],
  refused: ['home_visit', 'yes', 'client', 'refused', 'side_effects'],
  not_located: ['phone', 'no', 'not_located', 'phone_off'],
};
const DATE_ANSWER = /^\d{4}-\d{2}-\d{2}$/;

// What the CHW sees: the labels of the language shown, and the date pickers on the page.
const visibleForm = async () => harness.page.evaluate(() => ({
  labels: Array.from(document.querySelectorAll('.question-label.active')).map(e => e.textContent.trim()),
  bikramSambat: document.querySelectorAll('.bikram-sambat-input-group').length,
  gregorianPickers: document.querySelectorAll('.widget.date input').length,
}));

// Bikram Sambat build: answer up to the date question, enter the date in the BS picker (year, month
// and day of the Gregorian day `iso`, converted by the picker's own calendar), then answer the rest.
const fillWithBikramSambat = async (answers) => {
  const cut = answers.findIndex(a => DATE_ANSWER.test(a));
  if (cut === -1) {
    return { result: await harness.fillForm(answers) };
  }
  await harness.fillForm(answers.slice(0, cut)); // stops at the empty required date: not submitted
  const picker = await harness.page.evaluate((iso) => {
    const group = $('.question:not(.disabled) .bikram-sambat-input-group').first();
    window.bikram_sambat_bootstrap.setDate_greg_text(group, null, iso);
    const input = group.closest('.question').find('input[type=date]');
    return { year: group.find('[name=year]').val(), day: group.find('[name=day]').val(), saved: input.val() };
  }, answers[cut]);
  const result = await harness.fillForm(answers.map((a, i) => (i === cut ? null : a)));
  return { result, picker };
};

const fill = async (language, answers) => {
  await harness.clear();
  await harness.setNow(`${REQUEST_DAY}T08:00:00`);
  harness.pushMockedDoc(requestRecord());
  await harness.flush({ hours: 2 });
  const [task] = await harness.getTasks({ actionForm: 'ltfu_follow_up' });
  const user = Object.assign({}, harness.userSettingsDoc, { language });
  harness.userSettingsDoc = user;
  try {
    await harness.loadAction(task);
    const shown = await visibleForm();
    if (BIKRAM_SAMBAT) {
      return Object.assign({ shown }, await fillWithBikramSambat(answers));
    }
    return { shown, result: await harness.fillForm(answers) };
  } finally {
    harness.userSettingsDoc = undefined;
  }
};

const writeExport = async (name, report) => {
  if (!exportDir) {
    return;
  }
  fs.mkdirSync(exportDir, { recursive: true });
  const hydrated = await harness.coreAdapter.fetchHydratedDoc(report._id, harness.state);
  hydrated.contact = await harness.coreAdapter.fetchHydratedDoc(harness.options.user, harness.state);
  fs.writeFileSync(path.join(exportDir, `${name}.json`), JSON.stringify(hydrated, null, 2));
};

// The report's fields without what differs by nature between two submissions.
const comparable = (report) => {
  const fields = JSON.parse(JSON.stringify(report.fields));
  delete fields.meta.instanceID;
  return fields;
};

describe(`LTFU follow-up in the CHW's language (${BIKRAM_SAMBAT ? 'Bikram Sambat' : 'Gregorian'} build)`, () => {
  before(async () => harness.start());
  after(async () => harness.stop());

  afterEach(() => {
    expect(harness.consoleErrors.map(msg => `${msg.type()}: ${msg.text()}`)).to.deep.equal([]);
  });

  for (const [outcome, answers] of Object.entries(SCENARIOS)) {
    it(`outcome ${outcome}: the report filled in sw and in ne equals the one filled in en`, async () => {
      const byLanguage = {};
      for (const language of ['en', 'sw', 'ne']) {
        const { shown, result, picker } = await fill(language, answers);
        expect(result.errors, language).to.deep.equal([]);
        if (BIKRAM_SAMBAT) {
          expect(shown.bikramSambat, 'date questions with a BS picker').to.equal(3);
          expect(shown.gregorianPickers).to.equal(0);
        } else {
          expect(shown.bikramSambat).to.equal(0);
        }
        if (picker) {
          // 2025-03-07 is 23 Falgun 2081 and 2025-02-27 is 15 Falgun 2081 in Bikram Sambat
          expect(picker.year).to.equal('२०८१'); // the picker writes Devanagari digits
          expect(picker.saved).to.match(DATE_ANSWER);
        }
        expect(shown.labels, language).to.include(METHOD_QUESTION[language]);
        for (const other of Object.keys(METHOD_QUESTION).filter(l => l !== language)) {
          expect(shown.labels, language).to.not.include(METHOD_QUESTION[other]);
        }
        byLanguage[language] = comparable(result.report);
        await writeExport(`follow-up-${language}-${outcome}`, result.report);
      }
      expect(byLanguage.en.follow_up.outcome).to.equal(outcome);
      const date = answers.find(a => DATE_ANSWER.test(a));
      if (date) {
        const saved = byLanguage.en.follow_up.next_appointment_date || byLanguage.en.follow_up.death_date;
        expect(saved).to.equal(date);
      }
      expect(byLanguage.sw).to.deep.equal(byLanguage.en);
      expect(byLanguage.ne).to.deep.equal(byLanguage.en);
    });
  }
});
