# frozen_string_literal: true

class ChecklistItem < ApplicationRecord
  belongs_to :task, foreign_key: :todo_id
end
