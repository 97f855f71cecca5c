"""Words of the synthetic demo documents. All invented: no real person, place or result."""

FIRST = ["Mara", "Tobin", "Ilsa", "Corin", "Dalia", "Emrys", "Fenna", "Joren", "Kasia", "Lior",
         "Nadia", "Orrin", "Perrin", "Rhea", "Soren", "Talia", "Ulric", "Vesna", "Wren", "Yara"]
LAST = ["Voss", "Alder", "Brenn", "Castell", "Dorran", "Ellory", "Fairlie", "Garrow", "Hollis",
        "Iverne", "Kestrel", "Lindqvist", "Marrow", "Norcott", "Oakes", "Pellam", "Quell", "Wexley"]
DOCTORS = ["Hale", "Okafor", "Brandt", "Ismay", "Lowell", "Moreno", "Sato", "Varga", "Nkemdi"]
FACILITIES = ["Northfield General Hospital", "Lakeside Community Clinic", "Riverbend Hospital",
              "St Aldric Medical Center", "Harrow Valley Health Centre"]
WARDS = ["Ward 2A", "Ward 4B", "Ward 7C", "Outpatient Clinic", "Day Unit", "Emergency Department"]
# panel title -> "name, unit, low..high; ..."; the range's decimals are the value's decimals
PANELS = {
    "laboratory": {
        "Hematology Report": "Hemoglobin, g/dL, 12.0..16.0; Hematocrit, %, 36..48; "
            "White blood cells, K/uL, 4.0..11.0; Platelets, K/uL, 150..400; "
            "Red blood cells, M/uL, 4.20..5.90; Mean cell volume, fL, 80..100",
        "Basic Metabolic Panel": "Glucose, mg/dL, 70..99; Creatinine, mg/dL, 0.60..1.20; "
            "Sodium, mmol/L, 135..145; Potassium, mmol/L, 3.5..5.1; Urea nitrogen, mg/dL, 7..20; "
            "Calcium, mg/dL, 8.5..10.5",
        "Lipid Panel": "Total cholesterol, mg/dL, 125..200; Triglycerides, mg/dL, 40..150; "
            "HDL cholesterol, mg/dL, 40..60; LDL cholesterol, mg/dL, 50..130; "
            "Fasting glucose, mg/dL, 70..99",
        "Liver Function Tests": "ALT, U/L, 7..56; AST, U/L, 10..40; "
            "Alkaline phosphatase, U/L, 44..147; Total bilirubin, mg/dL, 0.1..1.2; "
            "Albumin, g/dL, 3.5..5.0",
        "Coagulation Studies": "Prothrombin time, sec, 11.0..13.5; INR, , 0.80..1.10; "
            "APTT, sec, 25..35; Fibrinogen, mg/dL, 200..400",
    },
    "cardiology": {
        "Electrocardiogram Report": "Heart rate, bpm, 60..100; PR interval, ms, 120..200; "
            "QRS duration, ms, 80..120; QTc interval, ms, 350..450; QRS axis, degrees, -30..90",
        "Echocardiogram Report": "Ejection fraction, %, 55..70; LV diastolic diameter, mm, 42..58; "
            "Left atrial diameter, mm, 27..40; Septal thickness, mm, 6..11; "
            "Aortic root, mm, 20..37",
        "Chest Pain Assessment": "Troponin I, ng/L, 0..34; Systolic pressure, mmHg, 100..140; "
            "Diastolic pressure, mmHg, 60..90; Heart rate, bpm, 60..100; "
            "Oxygen saturation, %, 95..100",
        "Exercise Stress Test": "Exercise duration, min, 6.0..12.0; "
            "Peak heart rate, bpm, 140..185; "
            "Peak systolic pressure, mmHg, 150..200; ST depression, mm, 0.0..1.0; "
            "Metabolic equivalents, METs, 7.0..13.0",
        "Holter Monitor Summary": "Mean heart rate, bpm, 60..90; Minimum heart rate, bpm, 40..60; "
            "Maximum heart rate, bpm, 110..160; Ventricular ectopic beats, , 0..500; "
            "Longest pause, sec, 1.0..2.0",
    },
}
DEPARTMENTS = {
    "laboratory": ["Clinical Laboratory", "Department of Pathology", "Laboratory Medicine"],
    "cardiology": ["Cardiology Department", "Heart Centre", "Cardiac Investigations"],
}
CONTEXT = {  # one topic line, shaped alike in both topics
    "laboratory": ("Specimen", ["serum", "plasma", "whole blood", "venous blood"], "Collected"),
    "cardiology": ("Indication", ["chest pain", "palpitations", "syncope", "shortness of breath",
                                  "hypertension follow-up"], "Recorded"),
}
NOTES_SHARED = ["Values reviewed with the patient.", "Compared with previous results from {date}.",
                "Follow-up in clinic in {k} weeks.", "No significant change since last visit.",
                "Please correlate clinically.", "Copy sent to the family doctor."]
NOTES_TOPIC = {
    "laboratory": ["Sample slightly hemolyzed, potassium may read high.",
                   "Fasting specimen confirmed.", "Repeat blood count in {k} weeks.",
                   "Results verified by the laboratory.",
                   "Kidney function stable, recheck creatinine."],
    "cardiology": ["Sinus rhythm, no acute ST changes.",
                   "Consider echocardiogram if symptoms persist.",
                   "Continue beta blocker, review in {k} weeks.",
                   "No arrhythmia during monitoring.",
                   "Heart murmur noted, valve review advised."],
}
# Annotator notes: never name a layout or a label; a few hint at the topic, as a real one might.
CAPTIONS_SHARED = ["scanned copy, a bit skewed", "second page not included",
                   "faxed, check the date", "copy for the referring physician",
                   "uploaded by ward clerk", "older document"]
CAPTIONS_TOPIC = {
    "laboratory": ["blood drawn this morning", "sample repeated after hemolysis",
                   "fasting bloods for the diabetes clinic"],
    "cardiology": ["patient reported palpitations", "seen after an episode of chest pain",
                   "heart clinic follow-up"],
}
